package api

import (
	"encoding/json"
	"fmt"
	"sort"
)

// ActionSpec is the part of a claimed step's action_spec that the runners
// use (contract §2.2; container fields: container-runners contract §1.2).
// It is decoded leniently, as the reference worker does: non-string args,
// list items and env values are dropped.
type ActionSpec struct {
	Type      string
	Script    string
	HasScript bool
	Source    string
	HasSource bool
	// Cmd is the inline shell command of a docker or pod action; HasCmd
	// is true when the key is present (a script action that has only cmd
	// is refused with its own message).
	Cmd    string
	HasCmd bool
	// Entrypoint and Command are a container action's lists: nil when the
	// key is absent (the image's own applies), empty when given as [].
	Entrypoint []string
	Command    []string
	// Workdir is the action's working directory override ("" for none).
	Workdir string
	// Resources are the action's cpu and memory ("500m", "1Gi"), as given.
	Resources Resources
	// Manifest is a pod action's manifest overrides (raw JSON; nil when
	// absent or null), merged into the pod by the Kubernetes runner.
	Manifest     json.RawMessage
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
	s.Cmd, _ = getString("cmd")
	s.Entrypoint = presentList(m["entrypoint"])
	s.Command = presentList(m["command"])
	s.Workdir, _ = getString("workdir")
	if v, ok := m["resources"]; ok {
		var r struct {
			CPU    json.RawMessage `json:"cpu"`
			Memory json.RawMessage `json:"memory"`
		}
		if json.Unmarshal(v, &r) == nil {
			s.Resources = Resources{CPU: scalarString(r.CPU), Memory: scalarString(r.Memory)}
		}
	}
	if v, ok := m["manifest"]; ok && string(v) != "null" {
		s.Manifest = v
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

// Resources are an action's cpu and memory requests as written in the
// workflow ("500m", "2", "512Mi", "1Gi"); "" when not given.
type Resources struct {
	CPU, Memory string
}

// presentList is stringList for a key whose absence means something: nil
// when the value is missing, null or not a list, an empty non-nil slice
// for [] (or a list with no strings).
func presentList(raw json.RawMessage) []string {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil
	}
	out := []string{}
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			out = append(out, s)
		}
	}
	return out
}

// scalarString reads a YAML scalar that may have become a JSON number
// (cpu: 2) as the string it was written as.
func scalarString(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}
