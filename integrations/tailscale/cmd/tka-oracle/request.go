package main

import (
	"encoding/hex"
	"fmt"

	"tailscale.com/tka"
)

// The protocol is loose about absent fields: most text fields read as ""
// when missing or not a string (text), while a few must be strings and panic
// otherwise (mustText), which the dispatcher reports as an oracle_error.

func text(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func mustText(m map[string]any, k string) string {
	return m[k].(string)
}

// list reads a JSON array field; absent or null is an empty list, anything
// else that is not an array panics.
func list(m map[string]any, k string) []any {
	v := m[k]
	if v == nil {
		return nil
	}
	return v.([]any)
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(fmt.Sprintf("bad hex: %v", err))
	}
	return b
}

// hexField decodes the hex text field k ("" when absent).
func hexField(m map[string]any, k string) []byte { return unhex(text(m, k)) }

// decodeAUMs decodes a list of hex-encoded AUMs, panicking on the first one
// that is not valid hex or does not decode.
func decodeAUMs(items []any) []tka.AUM {
	out := make([]tka.AUM, 0, len(items))
	for i, it := range items {
		s, _ := it.(string)
		var a tka.AUM
		if err := a.Unserialize(unhex(s)); err != nil {
			panic(fmt.Sprintf("aum %d does not decode: %v", i, err))
		}
		out = append(out, a)
	}
	return out
}

// optionalHash reads an optional base32 AUM hash; nil when absent or null.
func optionalHash(m map[string]any, k string) *tka.AUMHash {
	v := m[k]
	if v == nil {
		return nil
	}
	s := v.(string)
	var h tka.AUMHash
	if err := h.UnmarshalText([]byte(s)); err != nil {
		panic(fmt.Sprintf("bad hash %q: %v", s, err))
	}
	return &h
}
