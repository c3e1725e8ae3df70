package fakeserver

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
)

// kind is the serde type of a request field.
type kind int

const (
	kString     kind = iota
	kStringList      // Vec<String>
	kBool
	kInt32
	kAny // serde_json::Value
)

// field describes one field of a request struct, the way serde sees it:
// required means no #[serde(default)] and not an Option; nullable means
// Option<T>. A list or bool with a default is neither: it may be absent
// but not null (§1.1).
type field struct {
	name     string
	kind     kind
	required bool
	nullable bool
}

// decodeJSON is axum's Json extractor (§1.1): 415 without a JSON content
// type, 413 over the body limit, 400 for a syntax error (plain text), 422
// for JSON of the wrong shape (plain text). Unknown fields are ignored. It
// writes the rejection and returns false, or fills dst and returns true.
func decodeJSON(w http.ResponseWriter, r *http.Request, fields []field, dst any) bool {
	body, ok := readJSONBody(w, r)
	if !ok {
		return false
	}
	if !json.Valid(body) {
		writePlain(w, http.StatusBadRequest, "Failed to parse the request body as JSON: syntax error")
		return false
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		writePlain(w, http.StatusUnprocessableEntity, "Failed to deserialize the JSON body into the target type: invalid type: expected a struct")
		return false
	}
	for _, f := range fields {
		if msg := f.check(obj); msg != "" {
			writePlain(w, http.StatusUnprocessableEntity, "Failed to deserialize the JSON body into the target type: "+msg)
			return false
		}
	}
	if err := json.Unmarshal(body, dst); err != nil {
		writePlain(w, http.StatusUnprocessableEntity, "Failed to deserialize the JSON body into the target type: "+err.Error())
		return false
	}
	return true
}

// readJSONBody reads a JSON request body as axum's extractor does: 415
// without a JSON content type, 413 over the limit, 400 for invalid UTF-8
// or a lone surrogate escape. The JSON syntax itself is the caller's.
func readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if !jsonContentType(r.Header.Get("Content-Type")) {
		writePlain(w, http.StatusUnsupportedMediaType, "Expected request with `Content-Type: application/json`")
		return nil, false
	}
	body, _ := io.ReadAll(r.Body)
	if len(body) > maxJSONBody {
		writePlain(w, http.StatusRequestEntityTooLarge, "Failed to buffer the request body: length limit exceeded")
		return nil, false
	}
	if !utf8.Valid(body) || hasLoneSurrogate(body) {
		writePlain(w, http.StatusBadRequest, "Failed to parse the request body as JSON: syntax error")
		return nil, false
	}
	return body, true
}

// jsonContentType accepts what axum accepts: application/json or
// application/*+json, parameters allowed.
func jsonContentType(v string) bool {
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

func (f field) check(obj map[string]json.RawMessage) string {
	raw, ok := obj[f.name]
	if !ok {
		if f.required {
			return fmt.Sprintf("missing field `%s`", f.name)
		}
		return ""
	}
	if string(raw) == "null" {
		if f.nullable || f.kind == kAny {
			return ""
		}
		return fmt.Sprintf("%s: invalid type: null, expected %s", f.name, f.kind)
	}
	if !f.kind.fits(raw) {
		return fmt.Sprintf("%s: invalid type, expected %s", f.name, f.kind)
	}
	return ""
}

func (k kind) String() string {
	switch k {
	case kString:
		return "a string"
	case kStringList:
		return "a sequence of strings"
	case kBool:
		return "a boolean"
	case kInt32:
		return "i32"
	}
	return "any value"
}

func (k kind) fits(raw json.RawMessage) bool {
	switch k {
	case kString:
		var s string
		return raw[0] == '"' && json.Unmarshal(raw, &s) == nil
	case kStringList:
		var l []string
		if raw[0] != '[' || json.Unmarshal(raw, &l) != nil {
			return false
		}
		// Go decodes a null element as ""; serde rejects it.
		var elems []json.RawMessage
		json.Unmarshal(raw, &elems)
		for _, e := range elems {
			if e[0] != '"' {
				return false
			}
		}
		return true
	case kBool:
		return string(raw) == "true" || string(raw) == "false"
	case kInt32:
		var n int32
		return json.Unmarshal(raw, &n) == nil
	}
	return true
}

// hasLoneSurrogate reports a \uD800-\uDFFF escape that is not part of a
// pair: serde_json rejects it as a syntax error (§1.1), Go does not. The
// input is valid JSON, so every backslash is inside a string.
func hasLoneSurrogate(b []byte) bool {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		var r rune
		for _, c := range b[i+2 : i+6] {
			switch {
			case c >= '0' && c <= '9':
				r = r<<4 | rune(c-'0')
			case c >= 'a' && c <= 'f':
				r = r<<4 | rune(c-'a'+10)
			case c >= 'A' && c <= 'F':
				r = r<<4 | rune(c-'A'+10)
			default:
				return 0, false
			}
		}
		return r, true
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		r, ok := hex4(i)
		if !ok {
			i++ // skip the escaped character
			continue
		}
		switch {
		case r >= 0xD800 && r <= 0xDBFF:
			lo, ok := hex4(i + 6)
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return true
			}
			i += 11
		case r >= 0xDC00 && r <= 0xDFFF:
			return true
		default:
			i += 5
		}
	}
	return false
}

// pathUUID is axum's Path<Uuid> extractor: a malformed UUID is a plain
// text 400 (§1.1).
func pathUUID(w http.ResponseWriter, r *http.Request, name string) (string, bool) {
	v := r.PathValue(name)
	id, err := uuid.Parse(v)
	if err != nil {
		writePlain(w, http.StatusBadRequest, "Invalid URL: UUID parsing failed: "+err.Error())
		return "", false
	}
	return id.String(), true
}

// workerUUID parses a worker_id from a body: a malformed one is a JSON
// 400 from the handler, not an extractor rejection (§1.4, §1.6).
func workerUUID(w http.ResponseWriter, v string) (string, bool) {
	id, err := uuid.Parse(v)
	if err != nil {
		writeError(w, http.StatusBadRequest, "Invalid worker ID")
		return "", false
	}
	return id.String(), true
}
