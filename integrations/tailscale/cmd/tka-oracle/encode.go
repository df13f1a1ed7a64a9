package main

import (
	"encoding/hex"
	"sort"

	"tailscale.com/tka"
)

// JSON shapes of tka values, as described in vectors/README.md: bytes are
// hex, nil is null and a present-but-empty value stays distinguishable.

func hexOrNull(b []byte) any {
	if b == nil {
		return nil
	}
	return hex.EncodeToString(b)
}

func errOrNull(err error) any {
	if err == nil {
		return nil
	}
	return err.Error()
}

func metaJSON(m map[string]string) any {
	if m == nil {
		return nil
	}
	return m
}

func keyJSON(k tka.Key) map[string]any {
	return map[string]any{
		"kind":   int(k.Kind),
		"votes":  k.Votes,
		"public": hexOrNull(k.Public),
		"meta":   metaJSON(k.Meta),
	}
}

func stateJSON(s tka.State) map[string]any {
	var last any
	if s.LastAUMHash != nil {
		last = hex.EncodeToString(s.LastAUMHash[:])
	}
	var values any
	if s.DisablementValues != nil {
		l := make([]any, len(s.DisablementValues))
		for i, v := range s.DisablementValues {
			l[i] = hexOrNull(v)
		}
		values = l
	}
	var keys any
	if s.Keys != nil {
		l := make([]any, len(s.Keys))
		for i, k := range s.Keys {
			l[i] = keyJSON(k)
		}
		keys = l
	}
	return map[string]any{
		"last_aum_hash":      last,
		"disablement_values": values,
		"keys":               keys,
		"state_id1":          s.StateID1,
		"state_id2":          s.StateID2,
	}
}

func aumJSON(a tka.AUM) map[string]any {
	out := map[string]any{
		"message_kind":      int(a.MessageKind),
		"message_kind_name": a.MessageKind.String(),
		"prev_aum_hash":     hexOrNull(a.PrevAUMHash),
		"key":               nil,
		"key_id":            hexOrNull(a.KeyID),
		"state":             nil,
		"votes":             nil,
		"meta":              metaJSON(a.Meta),
		"signatures":        nil,
	}
	if a.Key != nil {
		out["key"] = keyJSON(*a.Key)
	}
	if a.State != nil {
		out["state"] = stateJSON(*a.State)
	}
	if a.Votes != nil {
		out["votes"] = *a.Votes
	}
	if a.Signatures != nil {
		sigs := make([]any, len(a.Signatures))
		for i, s := range a.Signatures {
			sigs[i] = map[string]any{
				"key_id":    hexOrNull(s.KeyID),
				"signature": hexOrNull(s.Signature),
			}
		}
		out["signatures"] = sigs
	}
	return out
}

func sigJSON(s *tka.NodeKeySignature) any {
	if s == nil {
		return nil
	}
	return map[string]any{
		"sig_kind":        int(s.SigKind),
		"sig_kind_name":   s.SigKind.String(),
		"pubkey":          hexOrNull(s.Pubkey),
		"key_id":          hexOrNull(s.KeyID),
		"signature":       hexOrNull(s.Signature),
		"nested":          sigJSON(s.Nested),
		"wrapping_pubkey": hexOrNull(s.WrappingPubkey),
	}
}

// sortedHashes returns the base32 texts of hashes, sorted as strings.
func sortedHashes(hashes []tka.AUMHash) []string {
	out := make([]string, len(hashes))
	for i, h := range hashes {
		out[i] = h.String()
	}
	sort.Strings(out)
	return out
}

func aumHashes(aums []tka.AUM) []tka.AUMHash {
	out := make([]tka.AUMHash, len(aums))
	for i := range aums {
		out[i] = aums[i].Hash()
	}
	return out
}

// authorityJSON describes an authority: its head, oldest ancestor and state.
func authorityJSON(a *tka.Authority) map[string]any {
	return map[string]any{
		"head_b32":            a.Head().String(),
		"oldest_ancestor_b32": authorityOldestAncestor(a).String(),
		"state":               stateJSON(authorityState(a)),
	}
}

// openJSON reports the outcome of tka.Open (or any call that yields an
// authority): ok, error and, on success, the authority.
func openJSON(a *tka.Authority, err error) map[string]any {
	out := map[string]any{
		"ok":                  err == nil,
		"error":               errOrNull(err),
		"head_b32":            nil,
		"oldest_ancestor_b32": nil,
		"state":               nil,
	}
	if err == nil {
		for k, v := range authorityJSON(a) {
			out[k] = v
		}
	}
	return out
}
