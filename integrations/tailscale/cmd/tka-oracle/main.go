// Command tka-oracle answers questions about Tailscale's tailnet-lock package
// (tailscale.com/tka) over a JSON-lines protocol: one request object per input
// line, one response object per request, in order. It exists so that tka, a
// Python re-implementation, can be checked against Tailscale's own code.
//
// It must be built with the overlay in ../../overlay (see ../../README.md),
// which adds two read-only accessors to the tka package.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// request is one decoded input line. Numbers stay json.Number so that an
// "id" is echoed back exactly as it was sent.
type request map[string]any

// response is one output line; encoding/json writes its keys sorted.
type response map[string]any

// handlers maps each op to the function answering it.
var handlers = map[string]func(request) response{
	"ping":              func(request) response { return response{"pong": true} },
	"aum":               opAUM,
	"nks":               opNKS,
	"ed25519":           opEd25519,
	"chain":             opChain,
	"inform":            opInform,
	"sync_exchange":     opSyncExchange,
	"resign":            opResign,
	"kdf":               opKDF,
	"valid_disablement": opValidDisablement,
	"fs_open":           opFSOpen,
	"fs_write":          opFSWrite,
	"version":           opVersion,
}

// handleLine answers one input line. It reports ok=false for a line that is
// only white space, which gets no answer.
func handleLine(line []byte) (out []byte, ok bool) {
	if len(bytes.TrimSpace(line)) == 0 {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	// Decode into a plain map so that type errors name it as Go does.
	var m map[string]any
	var resp response
	if err := dec.Decode(&m); err != nil {
		resp = response{"oracle_error": "bad json: " + err.Error()}
	} else {
		req := request(m)
		resp = dispatch(req)
		if id, has := req["id"]; has {
			resp["id"] = id
		}
	}
	b, err := json.Marshal(resp)
	if err != nil {
		b = fmt.Appendf(nil, "{\"oracle_error\": %q}", "encoding: "+err.Error())
	}
	return b, true
}

// dispatch runs the request's op. A panic, in tka or in reading the request,
// is the answer {"oracle_error": "panic: ..."}.
func dispatch(req request) (resp response) {
	op, _ := req["op"].(string)
	h, known := handlers[op]
	if !known {
		return response{"oracle_error": fmt.Sprintf("unknown op %v", req["op"])}
	}
	defer func() {
		if r := recover(); r != nil {
			resp = response{"oracle_error": fmt.Sprintf("panic: %v", r)}
		}
	}()
	return h(req)
}

func serve(in io.Reader, out io.Writer) error {
	r := bufio.NewReaderSize(in, 1<<20)
	w := bufio.NewWriter(out)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			if b, ok := handleLine(line); ok {
				w.Write(b)
				w.WriteByte('\n')
				if ferr := w.Flush(); ferr != nil {
					return ferr
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func main() {
	if err := serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tka-oracle:", strings.TrimSpace(err.Error()))
		os.Exit(1)
	}
}
