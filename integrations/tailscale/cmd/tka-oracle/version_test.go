package main

import (
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"testing"
)

// requiredTailscale is the tailscale.com version ../../go.mod requires (the
// build rewrites go.mod to build against another version, so this follows).
func requiredTailscale(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?tailscale\.com\s+(v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod requires no tailscale.com")
	}
	return string(m[1])
}

func TestVersionOp(t *testing.T) {
	got := ask(t, `{"op":"version","id":"v"}`)
	if got["id"] != "v" || got["go_version"] != runtime.Version() {
		t.Errorf("version: %v", got)
	}
	want := requiredTailscale(t)
	if got["tailscale_version"] != want {
		t.Errorf("tailscale_version = %v, want %s (go.mod)", got["tailscale_version"], want)
	}
}

func TestModuleVersion(t *testing.T) {
	info := &debug.BuildInfo{
		Main: debug.Module{Path: "tka.invalid/integrations/tailscale", Version: "(devel)"},
		Deps: []*debug.Module{
			{Path: "go4.org/mem", Version: "v0.0.0-20240501181205-ae6ca9944745"},
			{Path: "tailscale.com", Version: "v1.101.0-pre"},
		},
	}
	if got := moduleVersion(info, "tailscale.com"); got != "v1.101.0-pre" {
		t.Errorf("dependency: %q", got)
	}
	info.Deps[1].Replace = &debug.Module{Path: "tailscale.com", Version: "v1.102.5"}
	if got := moduleVersion(info, "tailscale.com"); got != "v1.102.5" {
		t.Errorf("replaced dependency: %q", got)
	}
	info.Deps[1].Replace = &debug.Module{Path: "../tailscale"}
	if got := moduleVersion(info, "tailscale.com"); got != "v1.101.0-pre" {
		t.Errorf("replaced by a directory: %q", got)
	}
	info.Main = debug.Module{Path: "tailscale.com", Version: "(devel)"}
	if got := moduleVersion(info, "tailscale.com"); got != "(devel)" {
		t.Errorf("main module: %q", got)
	}
	if got := moduleVersion(&debug.BuildInfo{}, "tailscale.com"); got != "" {
		t.Errorf("no build info: %q", got)
	}
}
