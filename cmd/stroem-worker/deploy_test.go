package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/google/go-cmp/cmp"

	"github.com/stroem-worker/stroem-worker/shared/config"
	"gopkg.in/yaml.v3"
)

const deployDir = "../../scripts/deploy"

// knownCodes are the exit codes of the table.
func knownCodes() []int {
	var out []int
	for _, e := range exitCodes {
		out = append(out, e.Code)
	}
	return out
}

// TestExitCodeTableAgrees checks --help, the README and the deploy
// examples against the exit-code table in exitcode.go.
func TestExitCodeTableAgrees(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if code := run([]string{"--help"}, &out, &errOut); code != 0 {
		t.Fatalf("--help exited %d: %s", code, errOut.String())
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readmeRows := regexp.MustCompile(`(?m)^\| (\d+) \| `).FindAllStringSubmatch(string(readme), -1)
	var readmeCodes []int
	for _, m := range readmeRows {
		n, _ := strconv.Atoi(m[1])
		readmeCodes = append(readmeCodes, n)
	}
	if !slices.Equal(readmeCodes, knownCodes()) {
		t.Errorf("README exit codes = %v, want %v", readmeCodes, knownCodes())
	}
	for _, e := range exitCodes {
		if !strings.Contains(out.String(), strconv.Itoa(e.Code)+"  "+e.Meaning[:20]) {
			t.Errorf("--help lacks exit code %d (%s)", e.Code, e.Meaning)
		}
	}
	// Every exit code a deploy example names is one of ours.
	codeRefs := regexp.MustCompile(`values: \[([0-9, ]+)\]|RestartPreventExitStatus=([0-9 ]+)|SuccessExitStatus=([0-9 ]+)`)
	files, _ := filepath.Glob(filepath.Join(deployDir, "*"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, m := range codeRefs.FindAllStringSubmatch(string(data), -1) {
			list := m[1] + m[2] + m[3]
			for _, c := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' }) {
				n, _ := strconv.Atoi(c)
				if !slices.Contains(knownCodes(), n) {
					t.Errorf("%s names exit code %d, which is not in the table", filepath.Base(f), n)
				}
			}
		}
	}
}

// TestDeployExamplesUseRealFlagsAndKeys parses each example and checks the
// commands, flags and STROEM__ variables it uses exist.
func TestDeployExamplesUseRealFlagsAndKeys(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join(deployDir, "*"))
	if err != nil || len(files) < 8 {
		t.Fatalf("deploy examples: %v, %d files", err, len(files))
	}
	envRef := regexp.MustCompile(`STROEM__[A-Z_]+`)
	parsed := 0
	defer func() {
		if parsed < 8 {
			t.Errorf("found %d stroem-worker command lines in the examples, want at least 8", parsed)
		}
	}()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		if strings.HasSuffix(f, ".yaml") {
			dec := yaml.NewDecoder(bytes.NewReader(data))
			for {
				var doc map[string]any
				if err := dec.Decode(&doc); err != nil {
					if err.Error() != "EOF" {
						t.Errorf("%s: not valid YAML: %v", filepath.Base(f), err)
					}
					break
				}
			}
		}
		// Environment variables must be config keys.
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte(strings.Repeat("t", 32)), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, ev := range envRef.FindAllString(text, -1) {
			key := strings.ToLower(strings.TrimPrefix(ev, "STROEM__"))
			flags := map[string]string{"server_url": "http://127.0.0.1:1", "worker_token": strings.Repeat("x", 32)}
			val := sampleValue(key)
			if key == "worker_token_file" {
				delete(flags, "worker_token")
				val = tokenFile
			}
			_, err := config.Load(config.LoadOptions{Env: mapEnv{ev: val}, Flags: flags})
			if err != nil {
				t.Errorf("%s: %s: %v", filepath.Base(f), ev, err)
			}
		}
		// Each worker command line must parse.
		for _, args := range commandLines(text) {
			parsed++
			var out, errOut bytes.Buffer
			parser := newParserForTest(t, &out, &errOut)
			if _, err := parser.Parse(args); err != nil {
				t.Errorf("%s: stroem-worker %s: %v", filepath.Base(f), strings.Join(args, " "), err)
			}
		}
	}
}

type mapEnv map[string]string

func (m mapEnv) Lookup(k string) (string, bool) { v, ok := m[k]; return v, ok }

// sampleValue is a valid value for a config key, for parsing checks.
func sampleValue(key string) string {
	switch key {
	case "server_url":
		return "http://127.0.0.1:8080"
	case "worker_token":
		return strings.Repeat("x", 32)
	case "worker_token_file":
		return "/dev/null"
	case "max_concurrent", "drain_timeout_secs", "cancel_grace_secs":
		return "4"
	case "log_format":
		return "json"
	case "listen":
		return "127.0.0.1:9090"
	case "capabilities":
		return "script,kubernetes"
	}
	return "x"
}

// commandLines finds the arguments given to stroem-worker in a file: shell
// command lines, and Kubernetes/Nomad args arrays.
func commandLines(text string) [][]string {
	var out [][]string
	shell := regexp.MustCompile(`/usr/local/bin/stroem-worker ([^\n]*)`)
	for _, m := range shell.FindAllStringSubmatch(text, -1) {
		var args []string
		// The worker's arguments end where the shell's redirections,
		// pipes and lists begin (`2>&1 | logger`).
		for _, f := range strings.Fields(m[1]) {
			if strings.ContainsAny(f, "|;&<>") {
				break
			}
			args = append(args, f)
		}
		out = append(out, args)
	}
	arrays := regexp.MustCompile(`(?:args\s*[:=]|CMD)\s*\[([^\]]*)\]`)
	for _, m := range arrays.FindAllStringSubmatch(text, -1) {
		var args []string
		for _, a := range strings.Split(m[1], ",") {
			args = append(args, strings.Trim(strings.TrimSpace(a), `"`))
		}
		out = append(out, args)
	}
	return out
}

func newParserForTest(t *testing.T, stdout, stderr *bytes.Buffer) interface {
	Parse([]string) (any, error)
} {
	t.Helper()
	var cli CLI
	p, err := newParser(t.Context(), &cli, stdout, stderr, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	return parseAdapter{func(args []string) (any, error) { return p.Parse(args) }}
}

type parseAdapter struct{ f func([]string) (any, error) }

func (p parseAdapter) Parse(args []string) (any, error) { return p.f(args) }

// TestReadmeCLIAgrees checks the README's CLI block against the parser:
// every command and each of its own flags, both ways.
func TestReadmeCLIAgrees(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "## CLI\n\n```\n")
	if start < 0 {
		t.Fatal("README has no CLI block")
	}
	block := text[start+len("## CLI\n\n```\n"):]
	block = block[:strings.Index(block, "```")]
	documented := map[string][]string{}
	cmdLine := regexp.MustCompile(`^  ([a-z][a-z-]*(?: [a-z][a-z-]*)?)\s{2,}`)
	flagLine := regexp.MustCompile(`^      (--[a-z-]+)`)
	cur := ""
	for _, l := range strings.Split(block, "\n") {
		if m := cmdLine.FindStringSubmatch(l); m != nil {
			cur = m[1]
			documented[cur] = []string{}
		} else if m := flagLine.FindStringSubmatch(l); m != nil && cur != "" {
			documented[cur] = append(documented[cur], m[1])
		}
	}

	parser, err := newParser(context.Background(), &CLI{}, io.Discard, io.Discard, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	actual := map[string][]string{}
	var walk func(n *kong.Node, prefix string)
	walk = func(n *kong.Node, prefix string) {
		for _, c := range n.Children {
			if c.Hidden {
				continue
			}
			name := strings.TrimSpace(prefix + " " + c.Name)
			if len(c.Children) > 0 {
				walk(c, name)
				continue
			}
			flags := []string{}
			for _, f := range c.Flags {
				if f.Hidden || (f.Group != nil && f.Group.Key == "overrides") {
					continue
				}
				flags = append(flags, "--"+f.Name)
			}
			actual[name] = flags
		}
	}
	walk(parser.Model.Node, "")
	for _, m := range []map[string][]string{documented, actual} {
		for k := range m {
			slices.Sort(m[k])
		}
	}
	if diff := cmp.Diff(actual, documented); diff != "" {
		t.Errorf("README CLI block disagrees with the parser (-parser +README):\n%s", diff)
	}
}
