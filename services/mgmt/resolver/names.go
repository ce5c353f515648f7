package resolver

import (
	"fmt"
	"regexp"
	"strings"
)

// MaxNameLen is npm's limit on a package name's length.
const MaxNameLen = 214

// MaxSpecLen bounds a dependency's range or tag.
const MaxSpecLen = 256

// namePattern is npm's rule for new package names: lowercase, URL-safe, optionally scoped,
// not starting with "." or "_" (validate-npm-package-name).
var namePattern = regexp.MustCompile(`^(?:@[a-z0-9-~][a-z0-9-._~]*/)?[a-z0-9-~][a-z0-9-._~]*$`)

// tagPattern is what a dist-tag may look like; anything else that is not a range is refused.
var tagPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._-]{0,127}$`)

// ValidateName returns nil when name is a valid npm package name, else an error that says
// what rule it breaks.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("a dependency name must not be empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("dependency name %.40q... is %d characters; npm allows at most %d", name, len(name), MaxNameLen)
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("dependency name %q has leading or trailing spaces", name)
	case strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_"):
		return fmt.Errorf("dependency name %q must not start with . or _", name)
	case strings.ToLower(name) != name:
		return fmt.Errorf("dependency name %q must be lowercase", name)
	case name == "node_modules" || name == "favicon.ico":
		return fmt.Errorf("dependency name %q is reserved by npm", name)
	case strings.HasPrefix(name, "@") && !strings.Contains(name, "/"):
		return fmt.Errorf("scoped dependency name %q must look like @scope/name", name)
	case !namePattern.MatchString(name):
		return fmt.Errorf("dependency name %q is not a valid npm package name (lowercase letters, digits, - . _ ~, optionally @scope/name; URL-safe)", name)
	}
	return nil
}

// unsupportedPrefixes are dependency specs npm accepts but fnhook cannot build from a
// registry: they name git repositories, files, URLs or aliases.
var unsupportedPrefixes = []string{
	"git+", "git:", "git@", "github:", "gitlab:", "bitbucket:", "gist:",
	"http:", "https:", "file:", "link:", "npm:", "workspace:", "portal:", "patch:",
}

// ValidateSpec returns nil when spec is a semver range or a dist-tag, else an error that
// says why it is refused. It does not ask the registry.
func ValidateSpec(name, spec string) error {
	if len(spec) > MaxSpecLen {
		return fmt.Errorf("dependency %s: range is %d characters; at most %d are allowed", name, len(spec), MaxSpecLen)
	}
	s := strings.TrimSpace(spec)
	lower := strings.ToLower(s)
	for _, p := range unsupportedPrefixes {
		if strings.HasPrefix(lower, p) {
			return fmt.Errorf("dependency %s: %q is a git, file, URL or alias spec, which fnhook does not support; use a semver range such as ^1.2.3 or a dist-tag such as latest", name, spec)
		}
	}
	if strings.Contains(s, "/") || strings.Contains(s, "\\") {
		return fmt.Errorf("dependency %s: %q looks like a path or a GitHub shorthand, which fnhook does not support; use a semver range such as ^1.2.3 or a dist-tag such as latest", name, spec)
	}
	if _, err := parseRange(s); err == nil {
		return nil
	}
	if tagPattern.MatchString(s) {
		return nil
	}
	return fmt.Errorf("dependency %s: %q is neither a semver range (such as ^1.2.3, ~1.2, 1.x, >=1.0.0 <2.0.0) nor a dist-tag (such as latest)", name, spec)
}
