package api

import (
	"encoding/json"
	"fmt"
	"sort"
)

// ActionSpec is the part of a claimed step's action_spec that a local
// script runner uses (contract §2.2). It is decoded leniently, as the
// reference worker does: non-string args and env values are dropped.
type ActionSpec struct {
	Type         string
	Script       string
	HasScript    bool
	Source       string
	HasSource    bool
	HasCmd       bool
	Language     string
	Interpreter  string
	Dependencies []string
	Args         []string
	Env          map[string]string
	// EnvKeys lists Env's keys in sorted order, for a stable environment.
	EnvKeys []string
}

// ParseActionSpec decodes an action_spec object. An empty or null spec
// is an error with the wording of the reference worker (contract §5).
func ParseActionSpec(raw json.RawMessage) (*ActionSpec, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fmt.Errorf("Missing action_spec in claimed step")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decoding action_spec: %w", err)
	}
	s := &ActionSpec{Env: map[string]string{}}
	getString := func(key string) (string, bool) {
		v, ok := m[key]
		if !ok || string(v) == "null" {
			return "", false
		}
		var out string
		if json.Unmarshal(v, &out) != nil {
			return "", false
		}
		return out, true
	}
	s.Type, _ = getString("type")
	s.Script, s.HasScript = getString("script")
	s.Source, s.HasSource = getString("source")
	_, s.HasCmd = m["cmd"]
	if v, ok := m["cmd"]; ok && string(v) == "null" {
		s.HasCmd = false
	}
	s.Language, _ = getString("language")
	s.Interpreter, _ = getString("interpreter")
	s.Args = stringList(m["args"])
	s.Dependencies = stringList(m["dependencies"])
	if v, ok := m["env"]; ok {
		var env map[string]json.RawMessage
		if json.Unmarshal(v, &env) == nil {
			for k, val := range env {
				var sv string
				if json.Unmarshal(val, &sv) == nil {
					s.Env[k] = sv
					s.EnvKeys = append(s.EnvKeys, k)
				}
			}
		}
	}
	sort.Strings(s.EnvKeys)
	return s, nil
}

func stringList(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil
	}
	var out []string
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			out = append(out, s)
		}
	}
	return out
}
