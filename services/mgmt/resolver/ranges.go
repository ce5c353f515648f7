package resolver

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// Metadata is what resolution needs of a package's registry document.
type Metadata struct {
	Name     string            `json:"name"`
	DistTags map[string]string `json:"dist-tags"`
	// Versions holds only the published version strings; their manifests are skipped.
	Versions map[string]struct{} `json:"versions"`
}

// npmRange is a parsed npm range: the constraint, and the [major, minor, patch] tuples of
// the prereleases it names (npm lets a prerelease satisfy a range only when a comparator
// names a prerelease of that same tuple).
type npmRange struct {
	c        *semver.Constraints
	preTuple map[[3]uint64]bool
}

var preInRange = regexp.MustCompile(`v?(\d+)\.(\d+)\.(\d+)-[0-9A-Za-z.-]+`)

// parseRange parses an npm range. "" and "latest"-like tags are not ranges, except "" which
// npm reads as "*".
func parseRange(spec string) (npmRange, error) {
	s := strings.TrimSpace(spec)
	if s == "" {
		s = "*"
	}
	c, err := semver.NewConstraint(s)
	if err != nil {
		return npmRange{}, err
	}
	r := npmRange{c: c, preTuple: map[[3]uint64]bool{}}
	for _, m := range preInRange.FindAllString(s, -1) {
		v, err := semver.NewVersion(m)
		if err != nil {
			continue
		}
		r.preTuple[[3]uint64{v.Major(), v.Minor(), v.Patch()}] = true
	}
	return r, nil
}

func (r npmRange) satisfies(v *semver.Version) bool {
	if v.Prerelease() != "" && !r.preTuple[[3]uint64{v.Major(), v.Minor(), v.Patch()}] {
		return false
	}
	return r.c.Check(v)
}

// ErrNoMatch is wrapped by Pick's errors when no published version fits the spec.
var ErrNoMatch = errors.New("no matching version")

// Pick returns the exact version of meta that spec selects, as npm would install it: a
// dist-tag maps to its version; for a range, the "latest" tag's version if it satisfies the
// range, else the highest satisfying version (prereleases only when the range names one of
// the same major.minor.patch).
func Pick(meta Metadata, spec string) (string, error) {
	s := strings.TrimSpace(spec)
	if v, ok := meta.DistTags[s]; ok && s != "" {
		if _, published := meta.Versions[v]; !published {
			return "", fmt.Errorf("%s: dist-tag %q points at %s, which is not published: %w", meta.Name, s, v, ErrNoMatch)
		}
		return v, nil
	}
	r, err := parseRange(s)
	if err != nil {
		if tagPattern.MatchString(s) {
			return "", fmt.Errorf("%s has no dist-tag %q: %w", meta.Name, s, ErrNoMatch)
		}
		return "", fmt.Errorf("%s: %q is not a valid range: %w", meta.Name, s, ErrNoMatch)
	}
	if latest, ok := meta.DistTags["latest"]; ok {
		if _, published := meta.Versions[latest]; published {
			if v, err := semver.StrictNewVersion(latest); err == nil && r.satisfies(v) {
				return latest, nil
			}
		}
	}
	var best *semver.Version
	var bestRaw string
	for raw := range meta.Versions {
		v, err := semver.StrictNewVersion(raw)
		if err != nil {
			continue // npm ignores versions that are not valid semver
		}
		if !r.satisfies(v) {
			continue
		}
		if best == nil || v.GreaterThan(best) {
			best, bestRaw = v, raw
		}
	}
	if best == nil {
		return "", fmt.Errorf("no published version of %s satisfies %q (latest is %s): %w",
			meta.Name, s, meta.DistTags["latest"], ErrNoMatch)
	}
	return bestRaw, nil
}
