package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// goRead matches a FNHOOK_* variable read through a config.Env reader
// (env.String("FNHOOK_X", ...), env.Int, env.Duration, env.Bool, env.Addr, env.Secret) or
// through getenv / os.Getenv / os.LookupEnv. Other literals naming a variable (error
// messages, the environment of a child process, keys of `scripts/infra.sh env` output) are
// not reads.
var goRead = regexp.MustCompile(`(?:\.(?:String|Int|Duration|Bool|Addr|Secret)|\bgetenv|\bos\.Getenv|\bos\.LookupEnv)\(\s*"(FNHOOK_[A-Z0-9_]+)"`)

// goBuiltName matches a literal that can only be the start of a name built at run time
// ("FNHOOK_BENCH_" + k, "FNHOOK_%s"): such names are invisible to goRead.
var goBuiltName = regexp.MustCompile(`"FNHOOK_[A-Z0-9_]*(?:_"|%)`)

// shRead matches a variable expanded by a script; shOptional one expanded with a default
// (${X:-...}, ${X-...}, ${X:=...}), which under `set -u` is how a script takes an optional
// input from its environment.
var (
	shRead     = regexp.MustCompile(`\$\{?(FNHOOK_[A-Z0-9_]+)`)
	shOptional = regexp.MustCompile(`\$\{(FNHOOK_[A-Z0-9_]+):?[-=]`)
	shAssign   = regexp.MustCompile(`(?m)^\s*(?:export\s+)?(FNHOOK_[A-Z0-9_]+)=`)
)

// docName matches a variable named in the README; a match ending in "_" is a prefix
// written as FNHOOK_X_* rather than a variable. docRow matches the first cell of a table
// row, where a variable is documented (a mention in a default or in prose is not enough).
var (
	docName = regexp.MustCompile(`FNHOOK_[A-Z0-9_]+`)
	docRow  = regexp.MustCompile(`(?m)^\|([^|\n]*)\|`)
)

// TestReadmeDocumentsEveryVariable checks that README.md's Configuration section has a table
// row for every FNHOOK_* variable the services, the libraries, the bench and the scripts
// read, and that the README names no variable nothing reads any more. Variables read only
// by tests (FNHOOK_ENV_CANARY) are not configuration and need no row.
func TestReadmeDocumentsEveryVariable(t *testing.T) {
	root := goWorkRoot(t)
	read := make(map[string]string) // variable -> where it is first read
	envReadsGo(t, root, read)
	envReadsScripts(t, root, read)
	if len(read) == 0 {
		t.Fatal("found no FNHOOK_* variable read anywhere: the patterns no longer match the code")
	}

	raw, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	config := markdownSection(readme, "## Configuration")
	if config == "" {
		t.Fatal(`README.md has no "## Configuration" section`)
	}

	documented := make(map[string]bool)
	for _, row := range docRow.FindAllStringSubmatch(config, -1) {
		for _, name := range docName.FindAllString(row[1], -1) {
			if strings.HasSuffix(name, "_") {
				t.Errorf("README.md's Configuration table has a row for %s*: name each variable in full", name)
				continue
			}
			documented[name] = true
		}
	}
	var missing []string
	for name, where := range read {
		if !documented[name] {
			missing = append(missing, fmt.Sprintf("%s (read in %s)", name, where))
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Errorf("README.md's Configuration tables have no row for %d variable(s):\n  %s",
			len(missing), strings.Join(missing, "\n  "))
	}

	stale := make(map[string]bool)
	for _, name := range docName.FindAllString(readme, -1) {
		if _, ok := read[name]; !ok && !strings.HasSuffix(name, "_") {
			stale[name] = true
		}
	}
	if len(stale) > 0 {
		names := make([]string, 0, len(stale))
		for name := range stale {
			names = append(names, name)
		}
		sort.Strings(names)
		t.Errorf("README.md documents %d variable(s) that nothing reads any more:\n  %s",
			len(stale), strings.Join(names, "\n  "))
	}
}

// envReadsGo adds the variables read by the non-test Go files of the workspace.
func envReadsGo(t *testing.T, root string, read map[string]string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch name := d.Name(); {
			case path == root:
			case name == "vendor", name == "testdata", name == "node_modules", strings.HasPrefix(name, "."):
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, m := range goBuiltName.FindAllIndex(src, -1) {
			t.Errorf("%s:%d builds FNHOOK_* names at run time (%s): spell them out so they can be checked",
				rel, lineAt(src, m[0]), src[m[0]:m[1]])
		}
		for _, m := range goRead.FindAllSubmatchIndex(src, -1) {
			name := string(src[m[2]:m[3]])
			if _, ok := read[name]; !ok && !strings.HasSuffix(name, "_") {
				read[name] = fmt.Sprintf("%s:%d", rel, lineAt(src, m[0]))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// envReadsScripts adds the variables scripts/*.sh take from their environment: those
// expanded with a default, and those expanded but never assigned by a script. A variable a
// script sets itself and only then uses (FNHOOK_ROOT, the secrets read back from
// secrets.env, the test-only canary) is not configuration.
func envReadsScripts(t *testing.T, root string, read map[string]string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "scripts", "*.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scripts/*.sh")
	}
	srcs := make(map[string][]byte)
	assigned := make(map[string]bool)
	optional := make(map[string]bool)
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		srcs[f] = src
		for _, m := range shAssign.FindAllSubmatch(src, -1) {
			assigned[string(m[1])] = true
		}
		for _, m := range shOptional.FindAllSubmatch(src, -1) {
			optional[string(m[1])] = true
		}
	}
	for _, f := range files {
		src := srcs[f]
		rel, _ := filepath.Rel(root, f)
		for _, m := range shRead.FindAllSubmatchIndex(src, -1) {
			name := string(src[m[2]:m[3]])
			if _, ok := read[name]; ok || (assigned[name] && !optional[name]) {
				continue
			}
			read[name] = fmt.Sprintf("%s:%d", rel, lineAt(src, m[0]))
		}
	}
}

// markdownSection returns the text of the Markdown section starting with heading, up to
// the next heading of the same level, or "" when there is none.
func markdownSection(doc, heading string) string {
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		return ""
	}
	rest := doc[i+1+len(heading):]
	if j := strings.Index(rest, "\n## "); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// lineAt is the 1-based line number of offset off in src.
func lineAt(src []byte, off int) int {
	return 1 + strings.Count(string(src[:off]), "\n")
}

// goWorkRoot is the folder of go.work above the working directory.
func goWorkRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.work above the working directory")
		}
		dir = parent
	}
}
