// Package tarball packs a module's installed node_modules folder into the gzip tarball the
// module cache unpacks: entries start with "node_modules/", so unpacking into
// <cache>/<name>@<version>/ yields node_modules/<name>/...
//
// The folder was written by untrusted install scripts, and the packer may run as root, so
// it only packs regular files, folders and symlinks that stay inside node_modules, opens
// nothing through a symlink, and (when asked) refuses files not owned by the sandbox user.
// The output is deterministic for the same tree: sorted entries, fixed times and owners.
package tarball

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Root is the folder every entry lives under.
const Root = "node_modules"

// ErrTooLarge is returned when the tarball would exceed Options.MaxBytes.
var ErrTooLarge = errors.New("module tarball too large")

// ErrUnsafe is returned when the tree holds a file the sandbox user does not own (a hard
// link to a foreign file, or a path swapped while packing).
var ErrUnsafe = errors.New("unsafe file in node_modules")

// Options bound and guard packing.
type Options struct {
	// MaxBytes bounds the compressed size; 0 means no bound.
	MaxBytes int64
	// OwnerUID, when >= 0, is the only owner a packed file or folder may have.
	OwnerUID int
}

// Result describes a written tarball.
type Result struct {
	SHA256 string // hex of the compressed bytes
	Size   int64  // compressed bytes
	Files  int    // entries written
	// Skipped lists entries left out (special files, symlinks leaving node_modules).
	Skipped []string
}

// modTime is the time every entry gets, so equal trees give equal tarballs.
var modTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Pack writes the gzip tarball of prefix/node_modules to w.
func Pack(prefix string, w io.Writer, opts Options) (Result, error) {
	var res Result
	base := filepath.Join(prefix, Root)
	st, err := os.Lstat(base)
	if err != nil {
		return res, fmt.Errorf("pack: %w", err)
	}
	if !st.IsDir() {
		return res, fmt.Errorf("pack: %s is not a folder", base)
	}
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(w, h), limit: opts.MaxBytes}
	gz, err := gzip.NewWriterLevel(cw, gzip.BestCompression)
	if err != nil {
		return res, err
	}
	tw := tar.NewWriter(gz)
	err = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(prefix, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		skipped, err := addEntry(tw, p, name, opts)
		if err != nil {
			return err
		}
		if skipped {
			res.Skipped = append(res.Skipped, name)
		} else {
			res.Files++
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = gz.Close()
	}
	if cw.over {
		return res, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, opts.MaxBytes)
	}
	if err != nil {
		return res, fmt.Errorf("pack %s: %w", base, err)
	}
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	res.Size = cw.n
	return res, nil
}

// addEntry writes one entry; skipped is true when it was left out on purpose.
func addEntry(tw *tar.Writer, p, name string, opts Options) (skipped bool, err error) {
	info, err := os.Lstat(p)
	if err != nil {
		return false, err
	}
	if err := checkOwner(info, opts.OwnerUID, name); err != nil {
		return false, err
	}
	hdr := &tar.Header{Name: name, ModTime: modTime}
	mode := info.Mode()
	switch {
	case mode.IsDir():
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		hdr.Mode = 0o755
		return false, tw.WriteHeader(hdr)
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return false, err
		}
		if !insideRoot(name, target) {
			return true, nil
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
		hdr.Mode = 0o777
		return false, tw.WriteHeader(hdr)
	case mode.IsRegular():
		return false, addFile(tw, p, hdr, opts.OwnerUID)
	default:
		// Sockets, pipes, devices: nothing a module needs at run time.
		return true, nil
	}
}

// addFile copies a regular file, opened without following symlinks and checked again
// after opening, so a file swapped for a link after the walk is not read.
func addFile(tw *tar.Writer, p string, hdr *tar.Header, owner int) error {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("%w: open %s: %v", ErrUnsafe, hdr.Name, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%w: %s changed while packing", ErrUnsafe, hdr.Name)
	}
	if err := checkOwner(info, owner, hdr.Name); err != nil {
		return err
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Size = info.Size()
	// Keep only the executable bits that matter; never setuid, setgid or world-writable.
	hdr.Mode = 0o644
	if info.Mode().Perm()&0o111 != 0 {
		hdr.Mode = 0o755
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, io.LimitReader(f, hdr.Size))
	if err != nil {
		return err
	}
	if n != hdr.Size {
		return fmt.Errorf("%w: %s shrank while packing", ErrUnsafe, hdr.Name)
	}
	return nil
}

func checkOwner(info fs.FileInfo, owner int, name string) error {
	if owner < 0 {
		return nil
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) != owner {
		return fmt.Errorf("%w: %s is not owned by the build user", ErrUnsafe, name)
	}
	return nil
}

// insideRoot reports whether a symlink at name (slash path from the prefix) pointing at
// target resolves inside node_modules. Absolute targets never do: they would point into
// the machine that unpacks the tarball.
func insideRoot(name, target string) bool {
	if target == "" || filepath.IsAbs(target) {
		return false
	}
	resolved := path.Clean(path.Join(path.Dir(name), filepath.ToSlash(target)))
	return resolved == Root || strings.HasPrefix(resolved, Root+"/")
}

// countingWriter counts bytes and fails once more than limit (when > 0) were written.
type countingWriter struct {
	w     io.Writer
	n     int64
	limit int64
	over  bool
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.limit > 0 && c.n+int64(len(p)) > c.limit {
		c.over = true
		return 0, ErrTooLarge
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
