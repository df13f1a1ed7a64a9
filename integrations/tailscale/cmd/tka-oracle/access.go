package main

import (
	"fmt"
	"reflect"
	"unsafe"

	"tailscale.com/tka"
)

// tka keeps an authority's state and oldest ancestor unexported. The
// supported build adds two read-only accessors to the package through
// `go build -overlay` (../../overlay/tka_oracle_export.go.in, see the README);
// oracleAccessors is what that file provides.
type oracleAccessors interface {
	OracleState() tka.State
	OracleOldestAncestor() tka.AUMHash
}

// Without the overlay (plain `go vet`, `go test`) the same two fields are
// read through reflection, so the package still compiles and its tests run;
// both paths return the very same values.
func unexportedField[T any](a *tka.Authority, name string) T {
	f := reflect.ValueOf(a).Elem().FieldByName(name)
	if !f.IsValid() || f.Type() != reflect.TypeFor[T]() {
		panic(fmt.Sprintf("tka.Authority has no field %s of type %v", name, reflect.TypeFor[T]()))
	}
	return *(*T)(unsafe.Pointer(f.UnsafeAddr()))
}

func authorityState(a *tka.Authority) tka.State {
	if x, ok := any(a).(oracleAccessors); ok {
		return x.OracleState()
	}
	return unexportedField[tka.State](a, "state")
}

func authorityOldestAncestor(a *tka.Authority) tka.AUMHash {
	if x, ok := any(a).(oracleAccessors); ok {
		return x.OracleOldestAncestor()
	}
	oldest := unexportedField[tka.AUM](a, "oldestAncestor")
	return oldest.Hash()
}

// viaOverlay reports whether the overlay accessors were compiled in.
func viaOverlay() bool {
	_, ok := any(&tka.Authority{}).(oracleAccessors)
	return ok
}
