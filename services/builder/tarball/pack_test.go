package tarball

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

type entry struct {
	typ      byte
	mode     int64
	linkname string
	body     string
}

func write(t *testing.T, p, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// tree makes a node_modules folder like npm leaves it, plus things a hostile install
// script could leave behind.
func tree(t *testing.T) string {
	t.Helper()
	prefix := t.TempDir()
	nm := filepath.Join(prefix, "node_modules")
	write(t, filepath.Join(nm, "a", "package.json"), `{"name":"a"}`, 0o644)
	write(t, filepath.Join(nm, "a", "cli.js"), "#!/usr/bin/env node\n", 0o775)
	write(t, filepath.Join(nm, "a", "setuid"), "x", 0o4777)
	write(t, filepath.Join(nm, "@s", "b", "index.js"), "module.exports = 1\n", 0o600)
	must(t, os.MkdirAll(filepath.Join(nm, ".bin"), 0o755))
	must(t, os.Symlink("../a/cli.js", filepath.Join(nm, ".bin", "a")))
	must(t, os.Symlink("/etc/passwd", filepath.Join(nm, "a", "abs-link")))
	must(t, os.Symlink("../../outside", filepath.Join(nm, "a", "escaping-link")))
	must(t, syscall.Mkfifo(filepath.Join(nm, "a", "fifo"), 0o644))
	write(t, filepath.Join(prefix, "package.json"), `{"private":true}`, 0o644)
	return prefix
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, data []byte) map[string]entry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	got := map[string]entry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		got[h.Name] = entry{typ: h.Typeflag, mode: h.Mode, linkname: h.Linkname, body: string(body)}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" {
			t.Errorf("%s has owner %d/%d %q, want none", h.Name, h.Uid, h.Gid, h.Uname)
		}
	}
}

func TestPack(t *testing.T) {
	prefix := tree(t)
	var buf bytes.Buffer
	res, err := Pack(prefix, &buf, Options{OwnerUID: os.Geteuid()})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	if res.SHA256 != hex.EncodeToString(sum[:]) || res.Size != int64(buf.Len()) {
		t.Fatalf("result %+v does not describe the %d bytes written", res, buf.Len())
	}
	got := read(t, buf.Bytes())
	want := map[string]entry{
		"node_modules/":               {typ: tar.TypeDir, mode: 0o755},
		"node_modules/.bin/":          {typ: tar.TypeDir, mode: 0o755},
		"node_modules/.bin/a":         {typ: tar.TypeSymlink, mode: 0o777, linkname: "../a/cli.js"},
		"node_modules/@s/":            {typ: tar.TypeDir, mode: 0o755},
		"node_modules/@s/b/":          {typ: tar.TypeDir, mode: 0o755},
		"node_modules/@s/b/index.js":  {typ: tar.TypeReg, mode: 0o644, body: "module.exports = 1\n"},
		"node_modules/a/":             {typ: tar.TypeDir, mode: 0o755},
		"node_modules/a/cli.js":       {typ: tar.TypeReg, mode: 0o755, body: "#!/usr/bin/env node\n"},
		"node_modules/a/package.json": {typ: tar.TypeReg, mode: 0o644, body: `{"name":"a"}`},
		"node_modules/a/setuid":       {typ: tar.TypeReg, mode: 0o755, body: "x"},
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("%s = %+v (present %v), want %+v", name, g, ok, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected entry %s", name)
		}
	}
	if len(res.Skipped) != 3 {
		t.Errorf("skipped %v, want the two foreign symlinks and the fifo", res.Skipped)
	}

	// Packing the same tree again gives the same bytes.
	var again bytes.Buffer
	res2, err := Pack(prefix, &again, Options{OwnerUID: -1})
	if err != nil {
		t.Fatal(err)
	}
	if res2.SHA256 != res.SHA256 {
		t.Fatal("packing the same tree twice gave different tarballs")
	}
}

func TestPackLimits(t *testing.T) {
	prefix := t.TempDir()
	big := make([]byte, 256<<10)
	_, _ = rand.Read(big)
	write(t, filepath.Join(prefix, "node_modules", "big", "blob.bin"), string(big), 0o644)
	tests := []struct {
		name string
		opts Options
		want error
	}{
		{"too large", Options{MaxBytes: 64 << 10, OwnerUID: -1}, ErrTooLarge},
		{"foreign owner", Options{OwnerUID: os.Geteuid() + 4242}, ErrUnsafe},
		{"fits", Options{MaxBytes: 1 << 20, OwnerUID: os.Geteuid()}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Pack(prefix, io.Discard, tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Pack error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestPackWithoutNodeModules(t *testing.T) {
	if _, err := Pack(t.TempDir(), io.Discard, Options{OwnerUID: -1}); err == nil {
		t.Fatal("Pack of a prefix without node_modules succeeded")
	}
}

func TestInsideRoot(t *testing.T) {
	tests := []struct {
		name, target string
		want         bool
	}{
		{"node_modules/.bin/x", "../x/cli.js", true},
		{"node_modules/a/link", "sibling", true},
		{"node_modules/a/link", "../../etc/passwd", false},
		{"node_modules/a/link", "/etc/passwd", false},
		{"node_modules/a/link", "", false},
		{"node_modules/a/link", "..", true},
		{"node_modules/link", "../node_modules_evil/x", false},
	}
	for _, tt := range tests {
		if got := insideRoot(tt.name, tt.target); got != tt.want {
			t.Errorf("insideRoot(%q, %q) = %v, want %v", tt.name, tt.target, got, tt.want)
		}
	}
}
