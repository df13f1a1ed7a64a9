package main

import (
	"runtime"
	"runtime/debug"
)

// tailscaleModule is the module whose tka this program answers for.
const tailscaleModule = "tailscale.com"

// tailscaleVersion reports the version of tailscale.com this binary was
// built against, as the go command recorded it: "v1.102.5", a
// pseudo-version, or "(devel)" when tailscale.com is the main module. It is
// "" when the binary carries no build information or no such dependency.
// A replaced module reports the replacement's version when it has one.
func tailscaleVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	return moduleVersion(info, tailscaleModule)
}

// moduleVersion finds path among info's main module and dependencies.
func moduleVersion(info *debug.BuildInfo, path string) string {
	if info.Main.Path == path {
		return info.Main.Version
	}
	for _, dep := range info.Deps {
		if dep.Path != path {
			continue
		}
		if dep.Replace != nil && dep.Replace.Version != "" {
			return dep.Replace.Version
		}
		return dep.Version
	}
	return ""
}

// opVersion answers which Tailscale this oracle is: the tailscale.com module
// version (see tailscaleVersion) and the Go toolchain that built it.
func opVersion(request) response {
	return response{
		"tailscale_version": tailscaleVersion(),
		"go_version":        runtime.Version(),
	}
}
