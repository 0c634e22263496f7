package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxRequestBytes bounds a JSON command; a longer one is refused unread.
const MaxRequestBytes = 64 << 10

// jsonRequest is a command on {prefix}/{gateway}/cmd/{collector}/{device}:
//
//	{"id":"…","tag":"setpoint","value":42.5}
//	{"id":"…","writes":[{"tag":"setpoint","value":42.5},{"tag":"run","value":true}]}
type jsonRequest struct {
	ID     json.RawMessage `json:"id"`
	Tag    *string         `json:"tag"`
	Value  json.RawMessage `json:"value"`
	Writes []jsonWrite     `json:"writes"`
}

type jsonWrite struct {
	Tag   string          `json:"tag"`
	Value json.RawMessage `json:"value"`
}

// jsonReply is the answer on {prefix}/{gateway}/cmd-reply/{collector}/{device}:
//
//	{"id":"…","results":[{"tag":"setpoint","ok":true,"read_back":42.5}]}
//	{"id":"…","results":[{"tag":"setpoint","ok":false,"error":"not writable"}]}
//	{"id":"…","error":"invalid request: …"}
type jsonReply struct {
	ID      json.RawMessage `json:"id,omitempty"`
	Results []jsonResult    `json:"results,omitempty"`
	Error   string          `json:"error,omitempty"`
}

type jsonResult struct {
	Tag      string `json:"tag"`
	OK       bool   `json:"ok"`
	ReadBack any    `json:"read_back,omitempty"`
	Error    string `json:"error,omitempty"`
}

// HandleJSON executes a JSON command for device and returns the reply
// payload. It never fails: a request it cannot read gets a reply naming why
// (with the request's id when that much could be read).
func (h *Handler) HandleJSON(ctx context.Context, device string, payload []byte) []byte {
	req, err := parseJSON(payload)
	if err != nil {
		h.log.Warn("command refused", "device", device, "err", err)
		return encodeReply(jsonReply{ID: req.ID, Error: err.Error()})
	}
	var reqs []Request
	if req.Tag != nil {
		reqs = append(reqs, Request{Tag: *req.Tag, Value: rawValue(req.Value)})
	}
	for _, w := range req.Writes {
		reqs = append(reqs, Request{Tag: w.Tag, Value: rawValue(w.Value)})
	}
	results := h.Do(ctx, device, reqs)
	reply := jsonReply{ID: req.ID, Results: make([]jsonResult, len(results))}
	for i, r := range results {
		reply.Results[i] = jsonResult{Tag: r.Tag, OK: r.Err == nil}
		if r.Err != nil {
			reply.Results[i].Error = r.Err.Error()
		} else {
			reply.Results[i].ReadBack = r.ReadBack
		}
	}
	return encodeReply(reply)
}

// parseJSON decodes a request strictly: unknown keys, a missing tag or
// value, and more than DefaultMaxWrites writes are refused.
func parseJSON(payload []byte) (jsonRequest, error) {
	var req jsonRequest
	if len(payload) > MaxRequestBytes {
		return req, fmt.Errorf("invalid request: %d bytes, at most %d", len(payload), MaxRequestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		// Keep the id for the reply when the rest is what is wrong.
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(payload, &idOnly)
		req.ID = idOnly.ID
		return req, fmt.Errorf("invalid request: %v (want {\"id\":…,\"tag\":…,\"value\":…} or {\"id\":…,\"writes\":[{\"tag\":…,\"value\":…}]})", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, errors.New("invalid request: data after the JSON object")
	}
	switch {
	case req.Tag == nil && len(req.Writes) == 0:
		return req, errors.New(`invalid request: no "tag" and no "writes"`)
	case req.Tag != nil && len(req.Value) == 0:
		return req, fmt.Errorf("invalid request: tag %q has no \"value\"", *req.Tag)
	case len(req.Writes) > DefaultMaxWrites:
		return req, fmt.Errorf("invalid request: %d writes, at most %d", len(req.Writes), DefaultMaxWrites)
	}
	for i, w := range req.Writes {
		if w.Tag == "" {
			return req, fmt.Errorf("invalid request: writes[%d] has no \"tag\"", i)
		}
		if len(w.Value) == 0 {
			return req, fmt.Errorf("invalid request: writes[%d] (tag %q) has no \"value\"", i, w.Tag)
		}
	}
	return req, nil
}

// rawValue decodes one JSON value keeping numbers exact (json.Number);
// objects and arrays stay as decoded, which Convert refuses by type.
func rawValue(raw json.RawMessage) any {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	return v
}

func encodeReply(r jsonReply) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		// A read-back value JSON cannot carry (NaN): report it instead.
		for i := range r.Results {
			if _, err := json.Marshal(r.Results[i].ReadBack); err != nil {
				r.Results[i].ReadBack = nil
				r.Results[i].OK = false
				r.Results[i].Error = fmt.Sprintf("written, but the value read back cannot be sent: %v", err)
			}
		}
		b, _ = json.Marshal(r)
	}
	return b
}
