package modcache

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Limits bound what one tarball may unpack to.
type Limits struct {
	// MaxBytes bounds the total size of the regular files.
	MaxBytes int64
	// MaxEntries bounds the number of entries.
	MaxEntries int
}

// errUnsafe marks a tarball refused for what it holds (not for an I/O fault).
var errUnsafe = errors.New("unsafe tarball")

// unpack extracts the tar stream r into dest, an empty directory that the caller made.
// Every entry must lie under node_modules/. It refuses absolute names, ".." segments,
// links whose target leaves dest, entries written through a link, device files, and
// anything past lim. Files get mode 0644 (0755 when any execute bit was set), folders
// 0755, so the unprivileged runners can read everything and write nothing.
func unpack(r io.Reader, dest string, lim Limits) error {
	tr := tar.NewReader(r)
	var total int64
	entries := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		entries++
		if entries > lim.MaxEntries {
			return fmt.Errorf("%w: more than %d entries", errUnsafe, lim.MaxEntries)
		}
		rel, err := entryPath(h.Name)
		if err != nil {
			return err
		}
		if rel == "" || rel == "node_modules" {
			if h.Typeflag == tar.TypeDir {
				continue // the roots themselves
			}
			return fmt.Errorf("%w: %q is not a folder", errUnsafe, h.Name)
		}
		target := filepath.Join(dest, filepath.FromSlash(rel))
		if err := checkPath(dest, rel, h.Typeflag == tar.TypeDir); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("unpack %s: %w", rel, err)
			}
		case tar.TypeReg, tar.TypeRegA:
			total += h.Size
			if h.Size < 0 || total > lim.MaxBytes {
				return fmt.Errorf("%w: more than %d bytes unpacked", errUnsafe, lim.MaxBytes)
			}
			if err := writeFile(target, tr, h.Size, fileMode(h.Mode)); err != nil {
				return fmt.Errorf("unpack %s: %w", rel, err)
			}
		case tar.TypeSymlink:
			if err := checkLinkTarget(rel, h.Linkname); err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return fmt.Errorf("unpack %s: %w", rel, err)
			}
			if err := os.Symlink(h.Linkname, target); err != nil {
				return fmt.Errorf("unpack %s: %w", rel, err)
			}
		case tar.TypeLink:
			linkRel, err := entryPath(h.Linkname)
			if err != nil || linkRel == "" {
				return fmt.Errorf("%w: hard link %q -> %q leaves the module", errUnsafe, h.Name, h.Linkname)
			}
			if err := checkPath(dest, path.Dir(linkRel), true); err != nil {
				return err
			}
			src := filepath.Join(dest, filepath.FromSlash(linkRel))
			fi, err := os.Lstat(src)
			if err != nil || !fi.Mode().IsRegular() {
				return fmt.Errorf("%w: hard link %q -> %q is not to a file unpacked before it", errUnsafe, h.Name, h.Linkname)
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return fmt.Errorf("unpack %s: %w", rel, err)
			}
			if err := os.Link(src, target); err != nil {
				return fmt.Errorf("unpack %s: %w", rel, err)
			}
		case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			// Metadata, already applied by archive/tar.
		default:
			return fmt.Errorf("%w: %q has unsupported type %q", errUnsafe, h.Name, h.Typeflag)
		}
	}
}

// entryPath returns the cleaned, slash-separated path of a tar entry, "" for the root, or
// an error for names that are absolute, climb out with "..", or lie outside node_modules.
func entryPath(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: entry name %q", errUnsafe, name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == ".." {
			return "", fmt.Errorf("%w: entry name %q climbs out with ..", errUnsafe, name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	if clean != "node_modules" && !strings.HasPrefix(clean, "node_modules/") {
		return "", fmt.Errorf("%w: entry %q is not under node_modules/", errUnsafe, name)
	}
	return clean, nil
}

// checkLinkTarget refuses symlink targets that are absolute or lead outside the module
// folder once resolved from the link's own folder.
func checkLinkTarget(rel, linkname string) error {
	if linkname == "" || strings.HasPrefix(linkname, "/") || strings.Contains(linkname, "\\") || strings.ContainsRune(linkname, 0) {
		return fmt.Errorf("%w: symlink %q -> %q", errUnsafe, rel, linkname)
	}
	resolved := path.Join(path.Dir(rel), linkname)
	if resolved == ".." || strings.HasPrefix(resolved, "../") || resolved == "." {
		return fmt.Errorf("%w: symlink %q -> %q leaves the module", errUnsafe, rel, linkname)
	}
	return nil
}

// checkPath refuses to write rel when any folder on its way is a symlink or a file: a
// link may only ever be a leaf, so nothing is written through one, whatever it points at.
// rel itself may already exist only as a folder, and only when dir is true (tarballs list
// folders after files inside them, or twice).
func checkPath(dest, rel string, dir bool) error {
	segs := strings.Split(rel, "/")
	cur := dest
	for i, seg := range segs {
		cur = filepath.Join(cur, seg)
		fi, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unpack %s: %w", rel, err)
		}
		last := i == len(segs)-1
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%w: %q goes through the symlink %q", errUnsafe, rel, strings.Join(segs[:i+1], "/"))
		case !fi.IsDir() && !last:
			return fmt.Errorf("%w: %q goes through the file %q", errUnsafe, rel, strings.Join(segs[:i+1], "/"))
		case last && !(dir && fi.IsDir()):
			return fmt.Errorf("%w: %q appears twice", errUnsafe, rel)
		}
	}
	return nil
}

func fileMode(m int64) os.FileMode {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

func writeFile(target string, r io.Reader, size int64, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	// O_CREATE applies the umask: set the mode exactly.
	return os.Chmod(target, mode)
}

// fixModes makes every folder 0755 and every file 0644 or 0755 under root, without
// following links (chmod on a link would change its target).
func fixModes(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			return nil
		case d.IsDir():
			return os.Chmod(p, 0o755)
		default:
			fi, err := d.Info()
			if err != nil {
				return err
			}
			return os.Chmod(p, fileMode(int64(fi.Mode().Perm())))
		}
	})
}
