package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func ask(t *testing.T, line string) map[string]any {
	t.Helper()
	out, ok := handleLine([]byte(line))
	if !ok {
		t.Fatalf("no answer to %q", line)
	}
	var got map[string]any
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("answer %s to %q is not JSON: %v", out, line, err)
	}
	return got
}

func TestPing(t *testing.T) {
	got := ask(t, `{"op":"ping","id":12345678901234567890}`)
	if got["pong"] != true || got["id"] != json.Number("12345678901234567890") {
		t.Errorf("ping: %v", got)
	}
}

func TestKDF(t *testing.T) {
	got := ask(t, `{"op":"kdf","secret_hex":"00"}`)
	const want = "5a4eaf14aa24e503d03a29930a17aa6ada38a4e38176362f7eb5a8cb1e665d93"
	if got["kdf_hex"] != want {
		t.Errorf("kdf(00) = %v, want %s", got["kdf_hex"], want)
	}
}

func TestErrors(t *testing.T) {
	for line, want := range map[string]string{
		`{"op":"nope","id":1}`:             "unknown op nope",
		`{}`:                               "unknown op <nil>",
		`garbage`:                          "bad json: invalid character 'g' looking for beginning of value",
		`{"op":"aum","input_hex":"zz"}`:    "panic: bad hex: encoding/hex: invalid byte: U+007A 'z'",
		`{"op":"fs_open"}`:                 "panic: interface conversion: interface {} is nil, not string",
		`{"op":"chain","aums_hex":["00"]}`: "panic: aum 0 does not decode: cbor: cannot unmarshal positive integer into Go value of type tka.AUM",
	} {
		if got := ask(t, line); got["oracle_error"] != want {
			t.Errorf("%s: oracle_error = %q, want %q", line, got["oracle_error"], want)
		}
	}
	if _, ok := handleLine([]byte(" \t\r\n")); ok {
		t.Error("a blank line was answered")
	}
}

func TestAUMAndChain(t *testing.T) {
	// The empty CBOR map decodes to the all-zero AUM (kind 0, "invalid").
	got := ask(t, `{"op":"aum","input_hex":"a0"}`)
	if got["decode_ok"] != true || got["reserialized_hex"] != "a2010002f6" ||
		got["hash_b32"] != "RMQ5KLKMHDRANTFKLJQN3AX7ZEGVRUO2LXJKGER2QI5CQWX423CQ" {
		t.Errorf("aum a0: %v", got)
	}
	got = ask(t, `{"op":"chain","aums_hex":[],"fs":true}`)
	if got["ok"] != false || !strings.Contains(got["error"].(string), "no chain candidates") {
		t.Errorf("empty chain: %v", got)
	}
	if _, ok := got["fs_open"].(map[string]any); !ok {
		t.Errorf("empty chain with fs: no fs_open in %v", got)
	}
}

func TestServe(t *testing.T) {
	var out bytes.Buffer
	in := strings.NewReader("{\"op\":\"ping\",\"id\":1}\n\n{\"op\":\"ping\",\"id\":2}")
	if err := serve(in, &out); err != nil {
		t.Fatal(err)
	}
	if want := "{\"id\":1,\"pong\":true}\n{\"id\":2,\"pong\":true}\n"; out.String() != want {
		t.Errorf("serve wrote %q, want %q", out.String(), want)
	}
}
