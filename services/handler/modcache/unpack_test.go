package modcache

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	fnhook "github.com/fnhook/fnhook/libs"
)

type entry struct {
	name, link string
	typ        byte
	body       string
	mode       int64
}

func tarball(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode}
		if h.Mode == 0 {
			h.Mode = 0o600
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func dir(name string) entry          { return entry{name: name, typ: tar.TypeDir, mode: 0o700} }
func file(name, body string) entry   { return entry{name: name, typ: tar.TypeReg, body: body} }
func symlink(name, to string) entry  { return entry{name: name, typ: tar.TypeSymlink, link: to} }
func hardlink(name, to string) entry { return entry{name: name, typ: tar.TypeLink, link: to} }

var testLimits = Limits{MaxBytes: 1 << 20, MaxEntries: 100}

func TestUnpack(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		limits  Limits
		unsafe  bool // refused as unsafe (not an I/O error)
		check   func(t *testing.T, root string)
	}{
		{
			name: "a package with a bin link and an executable",
			entries: []entry{
				dir("node_modules/"), dir("node_modules/pkg/"),
				file("node_modules/pkg/index.js", "module.exports = 1"),
				{name: "node_modules/pkg/cli.js", typ: tar.TypeReg, body: "#!", mode: 0o700},
				dir("node_modules/.bin/"),
				symlink("node_modules/.bin/pkg", "../pkg/cli.js"),
				hardlink("node_modules/pkg/same.js", "node_modules/pkg/index.js"),
			},
			check: func(t *testing.T, root string) {
				mustMode(t, filepath.Join(root, "node_modules/pkg/index.js"), 0o644)
				mustMode(t, filepath.Join(root, "node_modules/pkg/cli.js"), 0o755)
				mustMode(t, filepath.Join(root, "node_modules/pkg"), 0o755|os.ModeDir)
				if to, err := os.Readlink(filepath.Join(root, "node_modules/.bin/pkg")); err != nil || to != "../pkg/cli.js" {
					t.Fatalf("bin link = %q, %v", to, err)
				}
				b, err := os.ReadFile(filepath.Join(root, "node_modules/pkg/same.js"))
				if err != nil || string(b) != "module.exports = 1" {
					t.Fatalf("hard link content = %q, %v", b, err)
				}
			},
		},
		{
			name:    "a folder listed after its files, and ./ prefixes",
			entries: []entry{file("./node_modules/a/x.js", "x"), dir("./node_modules/a/"), dir("./")},
			check: func(t *testing.T, root string) {
				mustMode(t, filepath.Join(root, "node_modules/a/x.js"), 0o644)
			},
		},
		{name: "dot-dot climbing out", entries: []entry{file("node_modules/../../x", "evil")}, unsafe: true},
		{name: "dot-dot that stays inside is refused too", entries: []entry{file("node_modules/a/../b", "x")}, unsafe: true},
		{name: "absolute path", entries: []entry{file("/etc/evil", "x")}, unsafe: true},
		{name: "outside node_modules", entries: []entry{file("package.json", "{}")}, unsafe: true},
		{name: "symlink escaping with dot-dot", entries: []entry{symlink("node_modules/x", "../../etc")}, unsafe: true},
		{name: "symlink to the root of the module", entries: []entry{symlink("node_modules/x", "..")}, unsafe: true},
		{name: "absolute symlink", entries: []entry{symlink("node_modules/x", "/etc/passwd")}, unsafe: true},
		{
			name: "writing through a symlink that points inside",
			entries: []entry{
				dir("node_modules/a/"), symlink("node_modules/l", "a"),
				file("node_modules/l/x.js", "x"),
			},
			unsafe: true,
		},
		{
			name: "a link chain that would escape once followed",
			entries: []entry{
				dir("node_modules/a/"), symlink("node_modules/up", "a/.."),
				symlink("node_modules/up/y", "../../.."),
			},
			unsafe: true,
		},
		{
			name:    "a file replacing a symlink",
			entries: []entry{symlink("node_modules/x", "a"), file("node_modules/x", "y")},
			unsafe:  true,
		},
		{name: "hard link to a file outside", entries: []entry{hardlink("node_modules/x", "../etc/passwd")}, unsafe: true},
		{name: "hard link outside node_modules", entries: []entry{hardlink("node_modules/x", "etc/passwd")}, unsafe: true},
		{
			name:    "hard link through a symlink",
			entries: []entry{dir("node_modules/a/"), file("node_modules/a/f", "x"), symlink("node_modules/l", "a"), hardlink("node_modules/h", "node_modules/l/f")},
			unsafe:  true,
		},
		{name: "device file", entries: []entry{{name: "node_modules/dev", typ: tar.TypeChar}}, unsafe: true},
		{name: "fifo", entries: []entry{{name: "node_modules/fifo", typ: tar.TypeFifo}}, unsafe: true},
		{name: "duplicate file", entries: []entry{file("node_modules/a", "1"), file("node_modules/a", "2")}, unsafe: true},
		{
			name:    "too many bytes",
			entries: []entry{file("node_modules/a", "0123456789"), file("node_modules/b", "0123456789")},
			limits:  Limits{MaxBytes: 15, MaxEntries: 100},
			unsafe:  true,
		},
		{
			name:    "too many entries",
			entries: []entry{file("node_modules/a", ""), file("node_modules/b", ""), file("node_modules/c", "")},
			limits:  Limits{MaxBytes: 100, MaxEntries: 2},
			unsafe:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base := t.TempDir()
			root := filepath.Join(base, "root")
			if err := os.Mkdir(root, 0o700); err != nil {
				t.Fatal(err)
			}
			lim := tt.limits
			if lim.MaxBytes == 0 {
				lim = testLimits
			}
			err := unpack(bytes.NewReader(tarball(t, tt.entries...)), root, lim)
			if tt.unsafe {
				if !errors.Is(err, errUnsafe) {
					t.Fatalf("unpack = %v, want an unsafe-tarball error", err)
				}
				// Nothing may have been written next to the root.
				if ents, _ := os.ReadDir(base); len(ents) != 1 {
					t.Fatalf("unpack wrote outside its folder: %v", ents)
				}
				return
			}
			if err != nil {
				t.Fatalf("unpack: %v", err)
			}
			if err := fixModes(root); err != nil {
				t.Fatal(err)
			}
			tt.check(t, root)
		})
	}
}

func mustMode(t *testing.T, p string, want os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode() & (os.ModePerm | os.ModeDir); got != want {
		t.Fatalf("%s: mode %v, want %v", p, got, want)
	}
}

func TestEntryPath(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"node_modules/a/b.js", "node_modules/a/b.js", true},
		{"./node_modules/a", "node_modules/a", true},
		{"node_modules//a", "node_modules/a", true},
		{"./", "", true},
		{"node_modules", "node_modules", true},
		{"node_modulesx/a", "", false},
		{"../node_modules/a", "", false},
		{"node_modules/a/../../b", "", false},
		{"/node_modules/a", "", false},
		{"node_modules\\a", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, err := entryPath(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("entryPath(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// fakeBlobs serves one tarball and counts downloads.
type fakeBlobs struct {
	data  map[string][]byte
	gets  atomic.Int32
	block chan struct{}
}

func (f *fakeBlobs) Get(_ context.Context, key string) (io.ReadCloser, int64, error) {
	f.gets.Add(1)
	if f.block != nil {
		<-f.block
	}
	b, ok := f.data[key]
	if !ok {
		return nil, 0, errors.New("no such key")
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

type fakeRecords map[string]fnhook.Module

func (f fakeRecords) GetModule(_ context.Context, name, version string) (fnhook.Module, bool, error) {
	m, ok := f[fnhook.ModuleKey(name, version)]
	return m, ok, nil
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestEnsure(t *testing.T) {
	good := gz(t, tarball(t, file("node_modules/@s/pkg/index.js", "ok"), file("node_modules/dep/index.js", "dep")))
	sum := sha256.Sum256(good)
	bad := gz(t, tarball(t, file("node_modules/evil/index.js", "x")))
	tests := []struct {
		name    string
		deps    map[string]string
		records fakeRecords
		data    map[string][]byte
		wantErr string // code of the *fnhook.Error, "any" for a plain error, "" for none
	}{
		{
			name:    "scoped module, verified",
			deps:    map[string]string{"@s/pkg": "1.0.0"},
			records: fakeRecords{"@s/pkg@1.0.0": {Status: fnhook.ModuleReady, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(good))}},
			data:    map[string][]byte{"modules/@s/pkg/1.0.0.tgz": good},
		},
		{
			name:    "digest mismatch",
			deps:    map[string]string{"@s/pkg": "1.0.0"},
			records: fakeRecords{"@s/pkg@1.0.0": {Status: fnhook.ModuleReady, SHA256: hex.EncodeToString(sum[:])}},
			data:    map[string][]byte{"modules/@s/pkg/1.0.0.tgz": bad},
			wantErr: "any",
		},
		{name: "no record", deps: map[string]string{"x": "1.0.0"}, records: fakeRecords{}, wantErr: "module_unavailable"},
		{
			name:    "failed module",
			deps:    map[string]string{"x": "1.0.0"},
			records: fakeRecords{"x@1.0.0": {Status: fnhook.ModuleFailed, Error: "E404"}},
			wantErr: "function_failed",
		},
		{name: "path in a name", deps: map[string]string{"../x": "1.0.0"}, wantErr: "function_failed"},
		{name: "path in a version", deps: map[string]string{"x": "../1"}, wantErr: "function_failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			c, err := New(root, &fakeBlobs{data: tt.data}, tt.records, testLimits, slog.New(slog.DiscardHandler), nil)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Ensure(context.Background(), tt.deps)
			switch tt.wantErr {
			case "":
				if err != nil {
					t.Fatalf("Ensure: %v", err)
				}
				for n, v := range tt.deps {
					if !c.Has(n, v) {
						t.Fatalf("%s@%s not in the cache", n, v)
					}
				}
				mustMode(t, filepath.Join(root, "@s", "pkg@1.0.0", "node_modules", "dep", "index.js"), 0o644)
			case "any":
				if err == nil {
					t.Fatal("Ensure succeeded, want an error")
				}
			default:
				if got := fnhook.ErrorCode(err); got != tt.wantErr {
					t.Fatalf("Ensure error code %q (%v), want %q", got, err, tt.wantErr)
				}
			}
			if tt.wantErr != "" {
				// Nothing half-done stays behind.
				ents, _ := os.ReadDir(root)
				for _, e := range ents {
					if e.Name() != "@s" {
						t.Fatalf("left behind: %s", e.Name())
					}
				}
			}
		})
	}
}

func TestEnsureOnce(t *testing.T) {
	data := gz(t, tarball(t, file("node_modules/one/index.js", "1")))
	sum := sha256.Sum256(data)
	blobs := &fakeBlobs{data: map[string][]byte{"modules/one/2.0.0.tgz": data}, block: make(chan struct{})}
	records := fakeRecords{"one@2.0.0": {Status: fnhook.ModuleReady, SHA256: hex.EncodeToString(sum[:])}}
	c, err := New(t.TempDir(), blobs, records, testLimits, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() { errs <- c.Ensure(context.Background(), map[string]string{"one": "2.0.0"}) })
	}
	for blobs.gets.Load() == 0 {
		// wait until the first download started, then let it go
		runtime.Gosched()
	}
	close(blobs.block)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := blobs.gets.Load(); n != 1 {
		t.Fatalf("%d downloads, want 1", n)
	}
}
