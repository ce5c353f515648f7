package npm

import (
	"regexp"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// MessageLimit bounds the error text kept for a failed build (it ends up in the module
// record, in events and in API answers).
const MessageLimit = 2 << 10

// Failure is a failed install.
type Failure struct {
	// Transient means the module is not to blame (registry, network, disk): try again later.
	Transient bool
	// Reason is npm's error code (E404, ETARGET, ECONNRESET...), or "timeout", "killed",
	// "exit" (a non-zero exit without a code, usually an install script), "memory", "pids"
	// or "disk" (a sandbox limit was hit), "start" or "workspace" (the builder's own
	// trouble).
	Reason string
	// Message is npm's own error output with the temporary paths stripped, at most
	// MessageLimit bytes.
	Message string
	// Err is the cause (the exit status), for logs.
	Err error
}

// Error implements error.
func (f *Failure) Error() string {
	kind := "permanent"
	if f.Transient {
		kind = "transient"
	}
	msg := "npm install failed (" + kind + ", " + f.Reason + "): " + f.Message
	if f.Transient && f.Err != nil {
		// The cause is the builder's own trouble: say it in the logs.
		msg += ": " + f.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (f *Failure) Unwrap() error { return f.Err }

var codeLine = regexp.MustCompile(`(?m)^npm (?:error|ERR!) (?:code|errno) (\S+)`)

// transientCodes are npm error codes that say nothing about the module: the network, the
// registry, TLS or the builder's machine failed. Everything else (E404, ETARGET,
// ENOVERSIONS, an install script's exit status...) is the module's own.
var transientCodes = map[string]bool{
	"ETIMEDOUT": true, "ECONNRESET": true, "ECONNREFUSED": true, "EAI_AGAIN": true,
	"EPIPE": true, "ECONNABORTED": true, "EHOSTUNREACH": true, "ENETUNREACH": true,
	"ENETDOWN": true, "ESOCKETTIMEDOUT": true, "ERR_SOCKET_TIMEOUT": true, "EPROTO": true,
	"EINTEGRITY": true, "E401": true, "E408": true, "E429": true,
	"ENOSPC": true, "EMFILE": true, "ENFILE": true, "ENOMEM": true, "EAGAIN": true, "EBUSY": true,
	// TLS trouble is a configuration problem of the builder (FNHOOK_NPM_CAFILE).
	"SELF_SIGNED_CERT_IN_CHAIN": true, "UNABLE_TO_GET_ISSUER_CERT_LOCALLY": true,
	"UNABLE_TO_VERIFY_LEAF_SIGNATURE": true, "CERT_HAS_EXPIRED": true,
	"DEPTH_ZERO_SELF_SIGNED_CERT": true, "ERR_TLS_CERT_ALTNAME_INVALID": true,
}

// Classify reads npm's output of a failed install and returns the first error code npm
// printed (empty when none) and whether the failure is transient. ENOTFOUND (no such host)
// is transient only for the registry's own host: another host (a tarball or git URL of a
// dependency) will not appear by trying again.
func Classify(output, registryHost string) (code string, transient bool) {
	for _, m := range codeLine.FindAllStringSubmatch(output, -1) {
		c := m[1]
		if code == "" {
			code = c
		}
		switch {
		case transientCodes[c]:
			return code, true
		case len(c) == 4 && c[0] == 'E' && c[1] == '5':
			return code, true // E500..E599 from the registry
		case c == "ENOTFOUND" && registryHost != "" && strings.Contains(output, "ENOTFOUND "+registryHost):
			return code, true
		}
	}
	return code, false
}

// Summarize turns npm's output into the error text a person reads: npm's "npm error" lines
// (or the last lines when there are none), without the pointer to the debug log, with each
// of dirs (the temporary build folder) stripped, at most MessageLimit bytes. When too long,
// the first line (npm's error code) and the tail are kept.
func Summarize(output string, dirs ...string) string {
	output = strings.ToValidUTF8(output, "?")
	for _, d := range dirs {
		if d == "" {
			continue
		}
		output = strings.ReplaceAll(output, d+"/"+prefixDir+"/", "")
		output = strings.ReplaceAll(output, d+"/", "")
		output = strings.ReplaceAll(output, d, "<build>")
	}
	var errs, all []string
	for _, line := range strings.Split(output, "\n") {
		line = strings.TrimRightFunc(clean(line), unicode.IsSpace)
		if line == "" || strings.Contains(line, "A complete log of this run can be found in") {
			continue
		}
		all = append(all, line)
		if strings.HasPrefix(line, "npm error") || strings.HasPrefix(line, "npm ERR!") {
			errs = append(errs, line)
		}
	}
	lines := errs
	if len(lines) == 0 {
		lines = all
	}
	return truncate(strings.Join(lines, "\n"), MessageLimit)
}

// clean drops control characters (colour codes of install scripts) but keeps tabs.
func clean(s string) string {
	s = ansi.ReplaceAllString(s, "")
	return strings.Map(func(r rune) rune {
		if r == '\t' || !unicode.IsControl(r) {
			return r
		}
		return -1
	}, s)
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;?]*[ -/]*[@-~]")

// truncate returns s when it fits in limit bytes; otherwise its first line and as much of
// its tail as fits, joined by "…", cut on rune boundaries.
func truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	const gap = "\n…\n"
	first, _, _ := strings.Cut(s, "\n")
	if len(first) > limit/4 {
		first = cutRunes(first, limit/4)
	}
	room := limit - len(first) - len(gap)
	tail := s[len(s)-room:]
	for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
		tail = tail[1:]
	}
	return first + gap + tail
}

func cutRunes(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// tail is an io.Writer that keeps the last limit bytes written to it. It is safe for
// concurrent use (npm's stdout and stderr share it).
type tail struct {
	mu      sync.Mutex
	limit   int
	buf     []byte
	dropped bool // some output was cut off the front
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) > t.limit {
		p = p[len(p)-t.limit:]
		t.dropped = true
	}
	t.buf = append(t.buf, p...)
	// Trim only when twice over, so writes are amortised O(1).
	if len(t.buf) > 2*t.limit {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.limit:]...)
		t.dropped = true
	}
	return n, nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	cut := t.dropped
	if len(b) > t.limit {
		b = b[len(b)-t.limit:]
		cut = true
	}
	// Cutting may have split a rune or a line; drop the partial first line.
	if cut {
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}
