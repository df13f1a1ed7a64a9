package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hdevalence/ed25519consensus"
	"go4.org/mem"
	"tailscale.com/tka"
	"tailscale.com/types/key"
	"tailscale.com/types/tkatype"
)

// opAUM decodes input_hex as an AUM and reports what tka makes of it.
func opAUM(req request) response {
	data := hexField(req, "input_hex")
	out := response{"input_hex": hex.EncodeToString(data)}
	var a tka.AUM
	if err := a.Unserialize(data); err != nil {
		out["decode_ok"] = false
		out["decode_error"] = err.Error()
		return out
	}
	out["decode_ok"] = true
	out["decode_error"] = nil
	out["aum"] = aumJSON(a)
	verr := a.StaticValidate()
	out["static_validate_ok"] = verr == nil
	out["static_validate_error"] = errOrNull(verr)
	canonical := a.Serialize()
	out["reserialized_hex"] = hex.EncodeToString(canonical)
	out["reserialized_equals_input"] = bytes.Equal(canonical, data)
	h := a.Hash()
	out["hash_b32"] = h.String()
	out["hash_hex"] = hex.EncodeToString(h[:])
	sh := a.SigHash()
	out["sighash_hex"] = hex.EncodeToString(sh[:])
	out["parent_hex"] = nil
	if p, ok := a.Parent(); ok {
		out["parent_hex"] = hex.EncodeToString(p[:])
	}
	return out
}

// bootstrapHex bootstraps an authority on a fresh in-memory store from a
// hex-encoded genesis AUM.
func bootstrapHex(genesisHex string) (*tka.Authority, error) {
	var g tka.AUM
	if err := g.Unserialize(unhex(genesisHex)); err != nil {
		return nil, fmt.Errorf("genesis decode: %v", err)
	}
	return tka.Bootstrap(tka.ChonkMem(), g)
}

func nodeKey(raw []byte) (key.NodePublic, bool) {
	if len(raw) != 32 {
		return key.NodePublic{}, false
	}
	return key.NodePublicFromRaw32(mem.B(raw)), true
}

// opNKS checks a node-key signature against an authority bootstrapped from
// a genesis AUM.
func opNKS(req request) response {
	rawKey := hexField(req, "node_key_hex")
	sigBytes := hexField(req, "sig_hex")
	out := response{
		"authority_genesis_hex": req["authority_genesis_hex"],
		"node_key_hex":          hex.EncodeToString(rawKey),
		"sig_hex":               hex.EncodeToString(sigBytes),
	}
	var sig tka.NodeKeySignature
	if err := sig.Unserialize(sigBytes); err != nil {
		out["decode_ok"] = false
		out["decode_error"] = err.Error()
	} else {
		out["decode_ok"] = true
		out["decode_error"] = nil
		out["sig"] = sigJSON(&sig)
		out["reserialized_hex"] = hex.EncodeToString(sig.Serialize())
		sh := sig.SigHash()
		out["sighash_hex"] = hex.EncodeToString(sh[:])
		kid, err := sig.UnverifiedAuthorizingKeyID()
		if err != nil {
			out["unverified_authorizing_key_id_hex"] = nil
			out["unverified_authorizing_key_id_error"] = err.Error()
		} else {
			out["unverified_authorizing_key_id_hex"] = hexOrNull(kid)
			out["unverified_authorizing_key_id_error"] = nil
		}
		out["unverified_wrapping_public_hex"] = nil
		if pub, ok := sig.UnverifiedWrappingPublic(); ok {
			out["unverified_wrapping_public_hex"] = hexOrNull(pub)
		}
		out["go_string"] = sig.String()
	}

	authority, err := bootstrapHex(text(req, "authority_genesis_hex"))
	if err != nil {
		out["authorized"] = nil
		out["error"] = "bootstrap: " + err.Error()
		return out
	}
	out["authorized"] = false
	out["rotation_details"] = nil
	nk, ok := nodeKey(rawKey)
	if !ok {
		out["error"] = "node key not 32 bytes"
		return out
	}
	details, err := authority.NodeKeyAuthorizedWithDetails(nk, sigBytes)
	if err != nil {
		out["error"] = err.Error()
		return out
	}
	out["authorized"] = true
	out["error"] = nil
	if details != nil {
		out["rotation_details"] = map[string]any{
			"prev_node_keys_hex": nodeKeysHex(details.PrevNodeKeys),
			"initial_sig":        sigJSON(details.InitialSig),
		}
	}
	return out
}

func nodeKeysHex(keys []key.NodePublic) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		raw := k.Raw32()
		out[i] = hex.EncodeToString(raw[:])
	}
	return out
}

// opEd25519 runs both Ed25519 verifiers tka uses.
func opEd25519(req request) response {
	pub := hexField(req, "public_hex")
	msg := hexField(req, "message_hex")
	sig := hexField(req, "signature_hex")
	out := response{}
	verify := func(name string, f func() bool) {
		defer func() {
			if r := recover(); r != nil {
				out[name+"_valid"] = false
				out[name+"_panic"] = fmt.Sprint(r)
			}
		}()
		out[name+"_valid"] = f()
	}
	verify("zip215", func() bool { return ed25519consensus.Verify(pub, msg, sig) })
	verify("go_stdlib", func() bool {
		return len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, msg, sig)
	})
	return out
}

// chainStore fills a store with AUMs and an optional last-active-ancestor,
// as the chain, fs_write and sync_exchange ops do.
func chainStore(store tka.Chonk, aums []tka.AUM, laa *tka.AUMHash) error {
	if err := store.CommitVerifiedAUMs(aums); err != nil {
		return err
	}
	if laa != nil {
		return store.SetLastActiveAncestor(*laa)
	}
	return nil
}

func headsJSON(store tka.Chonk) (any, any) {
	heads, err := store.Heads()
	if err != nil {
		return nil, err.Error()
	}
	return sortedHashes(aumHashes(heads)), nil
}

// opChain opens stored AUMs with tka.Open, in memory and optionally on disk.
func opChain(req request) response {
	aums := decodeAUMs(list(req, "aums_hex"))
	laa := optionalHash(req, "last_active_ancestor_b32")

	store := tka.ChonkMem()
	if err := chainStore(store, aums, laa); err != nil {
		panic(fmt.Sprintf("memory store: %v", err))
	}
	out := response{}
	out["heads_b32"], out["heads_error"] = headsJSON(store)
	for k, v := range openJSON(tka.Open(store)) {
		out[k] = v
	}

	if onDisk, _ := req["fs"].(bool); onDisk {
		dir, err := os.MkdirTemp("", "tka-oracle-chonk")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		fsStore, err := tka.ChonkDir(dir)
		if err != nil {
			out["chonkdir_error"] = err.Error()
			return out
		}
		if err := chainStore(fsStore, aums, laa); err != nil {
			out["fs_commit_error"] = err.Error()
			return out
		}
		out["fs_heads_b32"], out["fs_heads_error"] = headsJSON(fsStore)
		out["fs_open"] = openJSON(tka.Open(fsStore))
	}
	return out
}

// opInform bootstraps from a genesis AUM, then informs the authority of
// each batch of AUMs in turn, then reopens the store.
func opInform(req request) response {
	var genesis tka.AUM
	if err := genesis.Unserialize(hexField(req, "genesis_hex")); err != nil {
		panic(fmt.Sprintf("genesis does not decode: %v", err))
	}
	var store tka.Chonk = tka.ChonkMem()
	if onDisk, _ := req["fs"].(bool); onDisk {
		dir, err := os.MkdirTemp("", "tka-oracle-inform")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		fsStore, err := tka.ChonkDir(dir)
		if err != nil {
			panic(err)
		}
		store = fsStore
	}
	authority, err := tka.Bootstrap(store, genesis)
	steps := []any{}
	out := response{"steps": steps}
	if err != nil {
		out["bootstrap_ok"] = false
		out["bootstrap_error"] = err.Error()
		out["after_bootstrap"] = nil
		return out
	}
	out["bootstrap_ok"] = true
	out["bootstrap_error"] = nil
	out["after_bootstrap"] = authorityJSON(authority)
	for _, s := range list(req, "steps") {
		step := s.(map[string]any)
		batch := decodeAUMs(list(step, "batch_hex"))
		err := authority.Inform(store, batch)
		res := authorityJSON(authority)
		res["batch_hex"] = step["batch_hex"]
		res["ok"] = err == nil
		res["error"] = errOrNull(err)
		steps = append(steps, res)
	}
	out["steps"] = steps
	out["reopen"] = openJSON(tka.Open(store))
	return out
}

type syncSide struct {
	authority *tka.Authority
	store     tka.Chonk
	offer     tka.SyncOffer
}

func openSide(name string, m map[string]any) (*syncSide, error) {
	aums := decodeAUMs(list(m, "aums_hex"))
	laa := optionalHash(m, "last_active_ancestor_b32")
	store := tka.ChonkMem()
	if err := chainStore(store, aums, laa); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	a, err := tka.Open(store)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	offer, err := a.SyncOffer(store)
	if err != nil {
		panic(fmt.Sprintf("%s syncOffer: %v", name, err))
	}
	return &syncSide{a, store, offer}, nil
}

func offerJSON(o tka.SyncOffer) map[string]any {
	ancestors := make([]string, len(o.Ancestors))
	for i, h := range o.Ancestors {
		ancestors[i] = h.String()
	}
	return map[string]any{"head_b32": o.Head.String(), "ancestors_b32": ancestors}
}

func missingJSON(aums []tka.AUM, err error) map[string]any {
	out := map[string]any{"ok": err == nil, "error": errOrNull(err), "hashes_b32": nil}
	if err == nil {
		hashes := make([]string, len(aums))
		for i := range aums {
			hashes[i] = aums[i].Hash().String()
		}
		out["hashes_b32"] = hashes
	}
	return out
}

// informWith sends what one side computed the other is missing; nil when
// there was nothing to send.
func informWith(to *syncSide, aums []tka.AUM, err error) any {
	if err != nil || len(aums) == 0 {
		return nil
	}
	return to.authority.Inform(to.store, aums) == nil
}

// opSyncExchange opens two stores, exchanges sync offers and the AUMs each
// side finds the other missing, and informs each side of them.
func opSyncExchange(req request) response {
	local, err := openSide("local", req["local"].(map[string]any))
	if err != nil {
		return response{"open_error": err.Error()}
	}
	remote, err := openSide("remote", req["remote"].(map[string]any))
	if err != nil {
		return response{"open_error": err.Error()}
	}
	out := response{
		"case_type":       "exchange",
		"local_head_b32":  local.authority.Head().String(),
		"remote_head_b32": remote.authority.Head().String(),
		"local_offer":     offerJSON(local.offer),
		"remote_offer":    offerJSON(remote.offer),
	}
	localSends, localErr := local.authority.MissingAUMs(local.store, remote.offer)
	remoteSends, remoteErr := remote.authority.MissingAUMs(remote.store, local.offer)
	out["local_missing_aums"] = missingJSON(localSends, localErr)
	out["remote_missing_aums"] = missingJSON(remoteSends, remoteErr)
	after := map[string]any{
		"remote_inform_ok": informWith(remote, localSends, localErr),
		"local_inform_ok":  informWith(local, remoteSends, remoteErr),
	}
	after["local_head_b32"] = local.authority.Head().String()
	after["remote_head_b32"] = remote.authority.Head().String()
	out["after_exchange"] = after
	return out
}

// opResign re-signs a node-key signature with tka.ResignNKS and checks the
// result against an authority bootstrapped from genesis_hex.
func opResign(req request) response {
	var priv key.NLPrivate
	if err := priv.UnmarshalText([]byte(mustText(req, "priv_text"))); err != nil {
		panic(fmt.Sprintf("priv_text: %v", err))
	}
	nk, ok := nodeKey(hexField(req, "node_key_hex"))
	if !ok {
		panic("node key not 32 bytes")
	}
	oldSig := hexField(req, "old_sig_hex")
	newSig, err := tka.ResignNKS(priv, nk, tkatype.MarshaledSignature(oldSig))
	if err != nil {
		return response{"ok": false, "error": err.Error()}
	}
	out := response{
		"ok":                    true,
		"error":                 nil,
		"new_sig_hex":           hex.EncodeToString(newSig),
		"returned_old_verbatim": bytes.Equal(newSig, oldSig),
	}
	var decoded tka.NodeKeySignature
	if err := decoded.Unserialize(newSig); err != nil {
		out["new_sig_decode_error"] = err.Error()
	} else {
		out["new_sig"] = sigJSON(&decoded)
	}
	authority, err := bootstrapHex(text(req, "genesis_hex"))
	if err != nil {
		out["authorized"] = nil
		out["authorized_error"] = "bootstrap: " + err.Error()
		return out
	}
	details, err := authority.NodeKeyAuthorizedWithDetails(nk, newSig)
	out["authorized"] = err == nil
	out["authorized_error"] = errOrNull(err)
	prev := []string{}
	if details != nil {
		prev = nodeKeysHex(details.PrevNodeKeys)
	}
	out["prev_node_keys_hex"] = prev
	return out
}

func opKDF(req request) response {
	return response{"kdf_hex": hex.EncodeToString(tka.DisablementKDF(hexField(req, "secret_hex")))}
}

func opValidDisablement(req request) response {
	authority, err := bootstrapHex(text(req, "genesis_hex"))
	if err != nil {
		return response{"bootstrap_error": err.Error()}
	}
	return response{"valid": authority.ValidDisablement(hexField(req, "secret_hex"))}
}

// opFSOpen opens a directory as Tailscale's on-disk store.
func opFSOpen(req request) response {
	store, err := tka.ChonkDir(mustText(req, "dir"))
	if err != nil {
		return response{"ok": false, "chonkdir_error": err.Error()}
	}
	out := response{"all_aums_b32": nil, "all_aums_error": nil}
	if hashes, err := store.AllAUMs(); err != nil {
		out["all_aums_error"] = err.Error()
	} else {
		out["all_aums_b32"] = sortedHashes(hashes)
	}
	for k, v := range openJSON(tka.Open(store)) {
		out[k] = v
	}
	return out
}

// opFSWrite writes AUMs (and the last-active-ancestor hint) into a
// directory through Tailscale's on-disk store, and lists the files made.
func opFSWrite(req request) response {
	dir := mustText(req, "dir")
	aums := decodeAUMs(list(req, "aums_hex"))
	store, err := tka.ChonkDir(dir)
	if err != nil {
		return response{"ok": false, "error": err.Error()}
	}
	if err := store.CommitVerifiedAUMs(aums); err != nil {
		return response{"ok": false, "error": err.Error()}
	}
	if laa := optionalHash(req, "last_active_ancestor_b32"); laa != nil {
		if err := store.SetLastActiveAncestor(*laa); err != nil {
			return response{"ok": false, "error": err.Error()}
		}
	}
	files := []string{}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return response{"ok": false, "error": err.Error()}
	}
	return response{"ok": true, "error": nil, "files": files}
}
