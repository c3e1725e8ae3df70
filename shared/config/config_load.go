package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sethvargo/go-envconfig"
	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment variable Load reads: the key in upper
// case follows (STROEM__SERVER_URL), as the Rust worker's config crate does.
const EnvPrefix = "STROEM__"

// LoadOptions says where Load finds the file, environment and flags.
type LoadOptions struct {
	// Path is the YAML config file; "" reads no file.
	Path string
	// PathExplicit is true when Path was given (--config, STROEM_CONFIG):
	// then a missing file is an error. A missing default file is fine, so
	// env alone can configure the worker (Kubernetes, Lambda).
	PathExplicit bool
	// Env looks up environment variables; nil is the process environment.
	// Unknown STROEM__ variables are only reported when Env can be listed:
	// nil, envconfig.OsLookuper, or a map type (envconfig.MapLookuper).
	Env envconfig.Lookuper
	// Flags maps keys to values as typed on the command line, parsed like
	// environment values (lists comma-separated).
	Flags map[string]string
}

// Load builds the effective configuration — defaults, then the file, then
// the environment, then flags, each overriding the one before — reads
// worker_token_file, and validates the result. Every problem found is
// reported at once; the error matches ErrInvalid.
func Load(opts LoadOptions) (*Config, error) {
	l := &loader{c: defaults()}
	l.file(opts.Path, opts.PathExplicit)
	l.env(opts.Env)
	l.flags(opts.Flags)
	if len(l.errs) > 0 {
		return nil, problems(l.errs)
	}
	l.normalise()
	l.readTokenFile()
	if errs := append(l.errs, l.c.validate()...); len(errs) > 0 {
		return nil, problems(errs)
	}
	l.c.Warnings = l.warnings
	return l.c, nil
}

// loader carries one Load's result and what it found wrong.
type loader struct {
	c        *Config
	errs     []error
	warnings []string
}

func (l *loader) fail(format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf(format, args...))
}

func (l *loader) warn(format string, args ...any) {
	l.warnings = append(l.warnings, fmt.Sprintf(format, args...))
}

// layer applies one source's values. Both names of an aliased key may be
// given in one source only if they agree; a later source simply wins.
type layer struct {
	l    *loader
	src  Source
	seen map[string]setting // by key name
}

type setting struct{ name, raw, ref string }

func (l *loader) layer(src Source) *layer {
	return &layer{l: l, src: src, seen: map[string]setting{}}
}

// set parses raw into the field of key k, spelled name; where prefixes
// messages and ref is how a later message points back here.
func (ly *layer) set(k key, name, raw, where, ref string) {
	if prev, ok := ly.seen[k.name]; ok {
		switch {
		case prev.name == name:
			ly.l.fail("%s: %s is set twice (also at %s); keep one", where, name, prev.ref)
		case prev.raw != raw:
			ly.l.fail("%s: %s and %s (at %s) are the same setting with different values; keep one", where, name, prev.name, prev.ref)
		}
		return
	}
	ly.seen[k.name] = setting{name: name, raw: raw, ref: ref}
	if err := parse(k.field(ly.l.c), raw); err != nil {
		if ly.src == SourceFile {
			where += ": " + name
		}
		ly.l.fail("%s: %v", where, err)
		return
	}
	ly.l.c.Origins[k.name] = ly.src
}

// parse sets the field from its string form, the same for env, flags and
// YAML scalars.
func parse(field any, raw string) error {
	s := strings.TrimSpace(raw)
	switch p := field.(type) {
	case *string:
		*p = raw
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", raw)
		}
		*p = n
	case *float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%q is not a number of seconds (e.g. 2 or 0.5)", raw)
		}
		*p = f
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		*p = b
	case *[]string:
		*p = splitList(raw)
	default:
		panic(fmt.Sprintf("config: unsupported field type %T", field))
	}
	return nil
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items, so "script, ,docker," is [script docker].
func splitList(s string) []string {
	out := []string{}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// lookup finds the key a name (or alias) refers to.
func lookup(name string) (key, bool) {
	if canonical, ok := aliases[name]; ok {
		name = canonical
	}
	for _, k := range keys {
		if k.name == name {
			return k, true
		}
	}
	return key{}, false
}

// names is every name a key may be given as, for suggestions.
func names() []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.name)
	}
	for a := range aliases {
		out = append(out, a)
	}
	slices.Sort(out[len(keys):])
	return append(out, rustOnly...)
}

// file applies the YAML file at path.
func (l *loader) file(path string, explicit bool) {
	if path == "" {
		return
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return
	}
	if err != nil {
		l.fail("reading config file: %w; check --config and STROEM_CONFIG", err)
		return
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF { // an empty file: everything comes from env and flags
			return
		}
		l.errs = append(l.errs, yamlError(path, err))
		return
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		l.fail("%s:%d: only one YAML document is allowed; remove the second", path, extra.Line)
		return
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" { // "---" alone
		return
	}
	if root.Kind != yaml.MappingNode {
		l.fail("%s:%d: expected a mapping of keys to values (key: value lines)", path, root.Line)
		return
	}
	// Keys are checked here, not with Decoder.KnownFields(true): its
	// errors name neither the file nor the key of a wrongly typed value,
	// and cannot suggest the key that was meant.
	l.mapping(path, "", root)
}

// mapping applies the keys of one YAML mapping: the top level, or a
// section (docker:, kubernetes:) whose keys are named section.key.
func (l *loader) mapping(path, section string, m *yaml.Node) {
	ly := l.layer(SourceFile)
	for i := 0; i+1 < len(m.Content); i += 2 {
		kn, vn := m.Content[i], m.Content[i+1]
		where := fmt.Sprintf("%s:%d", path, kn.Line)
		name := kn.Value
		if section != "" {
			name = section + "." + name
		}
		if vn.Kind == yaml.AliasNode {
			vn = vn.Alias
		}
		if isSection(name) {
			switch {
			case vn.Kind == yaml.MappingNode:
				l.mapping(path, name, vn)
			case vn.Tag != "!!null": // "docker:" alone is an empty section
				l.fail("%s: %s: expected a section of keys (%s), found a %s", where, name, strings.Join(sectionKeys(name), ", "), kindName(vn))
			}
			continue
		}
		if slices.Contains(rustOnly, name) {
			l.warn("%s: %s: %s", where, name, ignoredNote)
			continue
		}
		k, ok := lookup(name)
		if !ok {
			l.fail("%s: unknown key %q%s", where, name, suggest(name, names()))
			continue
		}
		if vn.Tag == "!!null" { // "key:" with no value leaves the default
			continue
		}
		raw, err := scalarOrList(k, vn)
		if err != nil {
			l.fail("%s: %s: %v", where, name, err)
			continue
		}
		ly.set(k, name, raw, where, fmt.Sprintf("line %d", kn.Line))
	}
}

// scalarOrList returns a YAML value in the string form parse takes: lists
// become comma-separated.
func scalarOrList(k key, n *yaml.Node) (string, error) {
	_, isList := k.field(&Config{}).(*[]string)
	switch {
	case n.Kind == yaml.ScalarNode:
		return n.Value, nil
	case n.Kind == yaml.SequenceNode && isList:
		items := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("expected a list of names, found a nested %s at line %d", kindName(item), item.Line)
			}
			items = append(items, item.Value)
		}
		return strings.Join(items, ","), nil
	case isList:
		return "", fmt.Errorf("expected a list like [a, b], found a %s", kindName(n))
	}
	return "", fmt.Errorf("expected a single value, found a %s", kindName(n))
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "mapping"
	}
	return "value"
}

// yamlLine matches yaml.v3's syntax errors, "yaml: line 3: ...", to
// rewrite them as file:line like every other message. yaml.v3 leaves the
// line out when the problem is on the first one.
var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

func yamlError(path string, err error) error {
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		return fmt.Errorf("%s: malformed YAML: %w", path, err)
	}
	if m[1] == "" {
		m[1] = "1"
	}
	return fmt.Errorf("%s:%s: malformed YAML: %s", path, m[1], m[2])
}

// envName is the environment variable for a key or alias: a section's
// keys are joined with "__" (docker.host: STROEM__DOCKER__HOST).
func envName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, ".", "__"))
}

// isSection reports whether name is a section (keys named name.x exist).
func isSection(name string) bool { return len(sectionKeys(name)) > 0 }

// sectionKeys lists a section's keys, without the section name.
func sectionKeys(section string) []string {
	var out []string
	for _, k := range keys {
		if rest, ok := strings.CutPrefix(k.name, section+"."); ok {
			out = append(out, rest)
		}
	}
	return out
}

// env applies STROEM__ variables and warns about the ones it does not know.
func (l *loader) env(lk envconfig.Lookuper) {
	if lk == nil {
		lk = envconfig.OsLookuper()
	}
	ly := l.layer(SourceEnv)
	var known []string
	for _, name := range names() {
		ev := envName(name)
		known = append(known, ev)
		v, ok := lk.Lookup(ev)
		switch {
		case !ok:
		case slices.Contains(rustOnly, name):
			l.warn("%s: %s", ev, ignoredNote)
		default:
			k, _ := lookup(name)
			ly.set(k, name, v, ev, ev)
		}
	}
	for _, ev := range envNames(lk) {
		switch {
		case !strings.HasPrefix(ev, EnvPrefix) || slices.Contains(known, ev):
		case isRustOnlyEnv(ev): // Helm sets STROEM__KUBERNETES__*
			l.warn("%s: %s", ev, ignoredNote)
		default:
			hint := ""
			// Compare without the prefix every name shares, so it does
			// not make unrelated names look close.
			if best := closest(strings.ToLower(strings.TrimPrefix(ev, EnvPrefix)), names()); best != "" {
				hint = fmt.Sprintf(" (did you mean %s?)", envName(best))
			}
			l.warn("%s: unknown variable, ignored%s", ev, hint)
		}
	}
}

// isRustOnlyEnv reports whether ev sets a nested field of a Rust-only key
// (STROEM__KUBERNETES__NAMESPACE).
func isRustOnlyEnv(ev string) bool {
	for _, name := range rustOnly {
		if strings.HasPrefix(ev, envName(name)+"__") {
			return true
		}
	}
	return false
}

// envNames lists the variables lk holds, sorted, if it can be listed.
func envNames(lk envconfig.Lookuper) []string {
	var out []string
	if reflect.TypeOf(lk) == reflect.TypeOf(envconfig.OsLookuper()) {
		for _, kv := range os.Environ() {
			name, _, _ := strings.Cut(kv, "=")
			out = append(out, name)
		}
	} else if v := reflect.ValueOf(lk); v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String {
		for _, k := range v.MapKeys() {
			out = append(out, k.String())
		}
	}
	slices.Sort(out)
	return out
}

// flags applies command-line overrides.
func (l *loader) flags(flags map[string]string) {
	ly := l.layer(SourceFlag)
	for _, name := range slices.Sorted(maps.Keys(flags)) {
		k, ok := lookup(name)
		if !ok {
			l.fail("flag for unknown key %q%s", name, suggest(name, names()))
			continue
		}
		flag := "--" + strings.ReplaceAll(name, "_", "-")
		ly.set(k, name, flags[name], flag, flag)
	}
}

// normalise turns accepted spellings into the one the rest of the worker
// uses.
func (l *loader) normalise() {
	c := l.c
	c.ServerURL = strings.TrimRight(c.ServerURL, "/")
	caps := make([]string, 0, len(c.Capabilities))
	for _, cp := range c.Capabilities {
		if cp == "shell" {
			// The Rust worker's README and seed config called it shell.
			l.warn(`capabilities: "shell" is the old name of "script"; using script`)
			cp = "script"
		}
		if !slices.Contains(caps, cp) {
			caps = append(caps, cp)
		}
	}
	c.Capabilities = caps
}

// readTokenFile sets the token from worker_token_file.
func (l *loader) readTokenFile() {
	c := l.c
	if c.WorkerTokenFile == "" {
		return
	}
	if c.WorkerToken != "" {
		l.fail("worker_token (from %s) and worker_token_file (from %s) are both set; keep only one",
			c.Origins["worker_token"], c.Origins["worker_token_file"])
		return
	}
	data, err := os.ReadFile(c.WorkerTokenFile)
	if err != nil {
		l.fail("worker_token_file: %w; check the path and that the worker may read it", err)
		return
	}
	c.WorkerToken = strings.TrimSpace(string(data))
	if c.WorkerToken == "" {
		l.fail("worker_token_file: %s is empty; put the worker token in it", c.WorkerTokenFile)
		return
	}
	// The token's value came from the file, whatever set the file's path:
	// an error about the value must point there, not at the variable.
	c.Origins["worker_token"] = Source("worker_token_file " + c.WorkerTokenFile)
}

// suggest returns ` (did you mean "x"?)` for the candidate closest to s,
// or "" if none is close enough to be a likely typo.
func suggest(s string, candidates []string) string {
	if best := closest(s, candidates); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// closest returns the candidate nearest to s by edit distance, or "".
func closest(s string, candidates []string) string {
	best, bestD := "", math.MaxInt
	for _, c := range candidates {
		if d := distance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	if bestD > max(2, len(s)/4) {
		return ""
	}
	return best
}

// distance is the Levenshtein edit distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// problems is every problem Load or Validate found; it matches ErrInvalid.
type problems []error

func (p problems) Error() string {
	if len(p) == 1 {
		return ErrInvalid.Error() + ": " + p[0].Error()
	}
	var b strings.Builder
	b.WriteString(ErrInvalid.Error() + ":")
	for _, e := range p {
		b.WriteString("\n  " + e.Error())
	}
	return b.String()
}

func (p problems) Unwrap() []error { return p }

func (p problems) Is(target error) bool { return target == ErrInvalid }
