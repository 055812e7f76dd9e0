package readmetest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"
)

var (
	// inlineLink matches the target of an inline link or image,
	// [text](target) or ![alt](target); a title after the target is not
	// used in these documents.
	inlineLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	codeSpan   = regexp.MustCompile("`[^`]*`")
	heading    = regexp.MustCompile(`^#{1,6} (.+?)#*\s*$`)
	// linkText reduces a link in a heading to its text, as it renders.
	linkText = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

// BrokenLinks returns, for the Markdown file at path, every relative link
// (outside code) whose file or folder does not exist, or whose #anchor
// names no heading of the Markdown file it points to. Links with a scheme
// (https:, mailto:) are not followed.
func BrokenLinks(path string) ([]string, error) {
	lines, err := proseLines(path)
	if err != nil {
		return nil, err
	}
	var broken []string
	for n, line := range lines {
		for _, m := range inlineLink.FindAllStringSubmatch(codeSpan.ReplaceAllString(line, ""), -1) {
			target := m[1]
			if strings.Contains(strings.SplitN(target, "#", 2)[0], ":") {
				continue
			}
			if problem := checkLink(path, target); problem != "" {
				broken = append(broken, fmt.Sprintf("%s:%d: %s: %s", path, n+1, target, problem))
			}
		}
	}
	return broken, nil
}

// checkLink says what is wrong with target, a link of the file at from,
// or "" when nothing is.
func checkLink(from, target string) string {
	file, anchor, _ := strings.Cut(target, "#")
	dest := from
	if file != "" {
		dest = filepath.Join(filepath.Dir(from), filepath.FromSlash(file))
		if _, err := os.Stat(dest); err != nil {
			return "no such file"
		}
	}
	if anchor == "" {
		return ""
	}
	if !strings.HasSuffix(dest, ".md") {
		return "an anchor in a file that is not Markdown"
	}
	anchors, err := Anchors(dest)
	if err != nil {
		return err.Error()
	}
	if !anchors[anchor] {
		return "no heading has this anchor"
	}
	return ""
}

// Anchors returns the anchors GitHub gives the headings of the Markdown
// file at path: the heading's text in lower case, letters, digits, marks,
// '_' and '-' kept, spaces made '-', everything else dropped; a repeated
// anchor gets "-1", "-2", … (github-slugger).
func Anchors(path string) (map[string]bool, error) {
	lines, err := proseLines(path)
	if err != nil {
		return nil, err
	}
	anchors := map[string]bool{}
	seen := map[string]int{}
	for _, line := range lines {
		m := heading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		slug := Slug(m[1])
		if n := seen[slug]; n > 0 {
			seen[slug]++
			slug = fmt.Sprintf("%s-%d", slug, n)
		} else {
			seen[slug] = 1
		}
		anchors[slug] = true
	}
	return anchors, nil
}

// Slug is the anchor GitHub derives from a heading's Markdown text.
func Slug(text string) string {
	text = linkText.ReplaceAllString(text, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// proseLines returns the lines of the Markdown file at path, with the
// lines of fenced code blocks blanked (so that line numbers stay).
func proseLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	inCode := false
	for i, line := range lines {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inCode = !inCode
			lines[i] = ""
			continue
		}
		if inCode {
			lines[i] = ""
		}
	}
	return lines, nil
}
