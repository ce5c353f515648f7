package npm

import (
	"strings"
	"testing"
	"unicode/utf8"
)

const (
	outETARGET = `npm error code ETARGET
npm error notarget No matching version found for dayjs@0.0.999.
npm error notarget In most cases you or one of your dependencies are requesting a package version that doesn't exist.
npm error A complete log of this run can be found in: /tmp/fnhook-build-123/cache/_logs/2026-11-23T16_48_24_404Z-debug-0.log
`
	outE404 = `npm error code E404
npm error 404 Not Found - GET https://registry.npmjs.org/fnhook-nonexistent-pkg-zz
npm error 404  The requested resource 'fnhook-nonexistent-pkg-zz@1.0.0' could not be found or you do not have permission to access it.
`
	outScript = `npm error code 3
npm error path /tmp/fnhook-build-123/prefix/node_modules/badpkg
npm error command failed
npm error command sh -c echo building stuff; exit 3
npm error building stuff
npm error oops something broke
npm error A complete log of this run can be found in: /tmp/fnhook-build-123/cache/_logs/x-debug-0.log
`
	outRefused = `npm error code ECONNREFUSED
npm error syscall connect
npm error errno ECONNREFUSED
npm error FetchError: request to http://127.0.0.1:9/dayjs failed, reason: connect ECONNREFUSED 127.0.0.1:9
`
	outNotFoundRegistry = `npm error code ENOTFOUND
npm error syscall getaddrinfo
npm error errno ENOTFOUND
npm error network request to https://registry.npmjs.org/dayjs failed, reason: getaddrinfo ENOTFOUND registry.npmjs.org
`
	outNotFoundOther = `npm error code ENOTFOUND
npm error errno ENOTFOUND
npm error network request to https://tarballs.example.com/x.tgz failed, reason: getaddrinfo ENOTFOUND tarballs.example.com
`
	outE503 = "npm error code E503\nnpm error 503 Service Unavailable - GET https://registry.npmjs.org/dayjs\n"
	outTLS  = "npm error code SELF_SIGNED_CERT_IN_CHAIN\nnpm error errno SELF_SIGNED_CERT_IN_CHAIN\n"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name, out     string
		wantCode      string
		wantTransient bool
	}{
		{"no such version", outETARGET, "ETARGET", false},
		{"no such package", outE404, "E404", false},
		{"install script failed", outScript, "3", false},
		{"no versions", "npm error code ENOVERSIONS\n", "ENOVERSIONS", false},
		{"connection refused", outRefused, "ECONNREFUSED", true},
		{"registry host unknown", outNotFoundRegistry, "ENOTFOUND", true},
		{"other host unknown", outNotFoundOther, "ENOTFOUND", false},
		{"registry 503", outE503, "E503", true},
		{"rate limited", "npm error code E429\n", "E429", true},
		{"reset", "npm warn something\nnpm error code ECONNRESET\n", "ECONNRESET", true},
		{"eai_again", "npm error code EAI_AGAIN\n", "EAI_AGAIN", true},
		{"timed out", "npm error code ETIMEDOUT\n", "ETIMEDOUT", true},
		{"tls", outTLS, "SELF_SIGNED_CERT_IN_CHAIN", true},
		{"old npm format", "npm ERR! code ETARGET\n", "ETARGET", false},
		{"nothing printed", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, transient := Classify(tt.out, "registry.npmjs.org")
			if code != tt.wantCode || transient != tt.wantTransient {
				t.Fatalf("Classify = %q, %v; want %q, %v", code, transient, tt.wantCode, tt.wantTransient)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	const dir = "/tmp/fnhook-build-123"
	tests := []struct {
		name, out string
		want      string
	}{
		{"etarget", outETARGET, "npm error code ETARGET\nnpm error notarget No matching version found for dayjs@0.0.999.\n" +
			"npm error notarget In most cases you or one of your dependencies are requesting a package version that doesn't exist."},
		{"script paths stripped", outScript, "npm error code 3\nnpm error path node_modules/badpkg\nnpm error command failed\n" +
			"npm error command sh -c echo building stuff; exit 3\nnpm error building stuff\nnpm error oops something broke"},
		{"no error lines keeps the rest", "\x1b[31mboom\x1b[0m in " + dir + "/x\n\n", "boom in x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Summarize(tt.out, dir); got != tt.want {
				t.Fatalf("Summarize =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestSummarizeBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("npm error code 1\n")
	for i := 0; i < 500; i++ {
		b.WriteString("npm error línea de salida del script número ")
		b.WriteString(strings.Repeat("é", i%7))
		b.WriteString("\n")
	}
	b.WriteString("npm error the last line\n")
	got := Summarize(b.String())
	if len(got) > MessageLimit {
		t.Fatalf("len = %d, want <= %d", len(got), MessageLimit)
	}
	if !utf8.ValidString(got) {
		t.Fatal("summary is not valid UTF-8")
	}
	if !strings.HasPrefix(got, "npm error code 1\n") || !strings.HasSuffix(got, "npm error the last line") {
		t.Fatalf("summary lost its head or tail:\n%s", got)
	}
}

func TestTail(t *testing.T) {
	tl := &tail{limit: 16}
	for i := 0; i < 10; i++ {
		_, _ = tl.Write([]byte("line " + strings.Repeat("x", i) + "\n"))
	}
	got := tl.String()
	if len(got) > 16 {
		t.Fatalf("kept %d bytes, want <= 16", len(got))
	}
	if got != "line xxxxxxxxx\n" {
		t.Fatalf("tail = %q", got)
	}
	small := &tail{limit: 100}
	_, _ = small.Write([]byte("a\nb\n"))
	if small.String() != "a\nb\n" {
		t.Fatalf("tail of short output = %q", small.String())
	}
}

func TestDeniedHost(t *testing.T) {
	tests := []struct{ output, want string }{
		{"npm error 403 403 Forbidden - GET https://example.com/x.tgz\n", "example.com"},
		{"npm error 403 403 Forbidden - GET https://registry.npmjs.org/private-pkg\n", ""},
		{"npm error code E404\n", ""},
	}
	for _, tt := range tests {
		if got := deniedHost(tt.output, "registry.npmjs.org"); got != tt.want {
			t.Errorf("deniedHost(%q) = %q, want %q", tt.output, got, tt.want)
		}
	}
}
