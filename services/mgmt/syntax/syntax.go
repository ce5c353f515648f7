// Package syntax checks a function's JavaScript source with `node --check` before it is
// stored, so a tenant learns about a syntax error at once and not on the first call.
package syntax

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
)

// Module kinds, told apart from the code itself.
const (
	CommonJS = "commonjs"
	ESModule = "module"
)

// Checker runs `node --check`. It is safe for concurrent use; at most Parallel checks run at once.
type Checker struct {
	node    string
	timeout time.Duration
	sem     chan struct{}
}

// Options configure a Checker; zero fields take the defaults in parentheses.
type Options struct {
	Node     string        // the node binary ("node" on PATH)
	Timeout  time.Duration // bound of one node run (5 s)
	Parallel int           // concurrent node processes (4)
}

// New returns a Checker; it fails when the node binary cannot be found.
func New(o Options) (*Checker, error) {
	if o.Node == "" {
		o.Node = "node"
	}
	path, err := exec.LookPath(o.Node)
	if err != nil {
		return nil, fmt.Errorf("node binary %q: %w", o.Node, err)
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	return &Checker{node: path, timeout: o.Timeout, sem: make(chan struct{}, o.Parallel)}, nil
}

// maxOutput bounds how much of node's stderr is kept.
const maxOutput = 64 << 10

// esmHints are node's complaints about CommonJS code that is really an ES module.
var esmHints = []string{
	"Cannot use import statement outside a module",
	"Unexpected token 'export'",
	"Cannot use 'import.meta' outside a module",
	"await is only valid in async functions and the top level bodies of modules",
}

// Check parses code as CommonJS and, when node says it is an ES module, as an ES module.
// It returns the kind that parsed, an *fnhook.Error with code syntax_error (422) naming the
// line and node's message, or another error when node could not run (a platform fault).
func (c *Checker) Check(ctx context.Context, code string) (kind string, err error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("wait for a syntax check slot: %w", ctx.Err())
	}
	defer func() { <-c.sem }()
	dir, err := os.MkdirTemp("", "fnhook-check-")
	if err != nil {
		return "", fmt.Errorf("syntax check temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	out, err := c.run(ctx, dir, "function.cjs", code)
	if err != nil || out == "" {
		return CommonJS, err
	}
	for _, h := range esmHints {
		if strings.Contains(out, h) {
			out2, err := c.run(ctx, dir, "function.mjs", code)
			if err != nil || out2 == "" {
				return ESModule, err
			}
			return "", syntaxError(out2, dir)
		}
	}
	return "", syntaxError(out, dir)
}

// run checks code written to dir/file and returns node's stderr when it refused it.
func (c *Checker) run(ctx context.Context, dir, file, code string) (string, error) {
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, []byte(code), 0o600); err != nil {
		return "", fmt.Errorf("write code for syntax check: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.node, "--check", path)
	// node gets nothing of mgmt's environment (which holds the admin key).
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "NODE_OPTIONS="}
	cmd.Dir = dir
	var stderr limitedBuffer
	stderr.max = maxOutput
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	cmd.WaitDelay = 500 * time.Millisecond
	err := cmd.Run()
	if ctx.Err() != nil {
		return "", &fnhook.Error{Code: fnhook.CodeUnavailable,
			Message: fmt.Sprintf("the syntax check did not finish within %s; retry", c.timeout), Err: ctx.Err()}
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return stderr.String(), nil
	}
	if err != nil {
		return "", fmt.Errorf("run node --check: %w", err)
	}
	return "", nil
}

var locLine = regexp.MustCompile(`^(.*\.[cm]js):(\d+)$`)
var errLine = regexp.MustCompile(`^[A-Za-z]*Error: `)

// maxSnippet is the longest source line quoted in a message (minified code has long lines).
const maxSnippet = 160

// syntaxError turns node's stderr into a message with the line, node's error and the
// offending source line with its caret; temp paths never show.
func syntaxError(out, dir string) error {
	lines := strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n")
	line := 0
	var snippet []string
	msg := ""
	for i, l := range lines {
		if m := locLine.FindStringSubmatch(l); m != nil && line == 0 {
			line, _ = strconv.Atoi(m[2])
			for _, s := range lines[i+1:] {
				if strings.TrimSpace(s) == "" {
					break
				}
				snippet = append(snippet, s)
			}
			continue
		}
		if msg == "" && errLine.MatchString(l) {
			msg = strings.TrimSpace(l)
		}
	}
	if msg == "" {
		msg = "node could not parse the code"
	}
	text := msg
	if line > 0 {
		text = fmt.Sprintf("line %d: %s", line, msg)
	}
	if len(snippet) == 2 && len(snippet[0]) <= maxSnippet {
		text += "\n" + snippet[0] + "\n" + snippet[1]
	}
	text = strings.ReplaceAll(text, dir+string(filepath.Separator), "")
	text = strings.ReplaceAll(text, dir, "")
	return &fnhook.Error{Code: fnhook.CodeSyntaxError, Message: text}
}

// limitedBuffer keeps the first max bytes written and drops the rest.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}
