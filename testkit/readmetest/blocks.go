package readmetest

import (
	"os"
	"strings"
	"testing"
)

// Block is one fenced code block of a Markdown document.
type Block struct {
	// Lang is the info string's first word ("js", "dart", "sql").
	Lang string
	// Info is the rest of the info string, e.g. "query:log-newest".
	Info string
	// Code is the block's text.
	Code string
}

// FencedBlocks returns every ``` block of the Markdown file at path, in
// order.
func FencedBlocks(t testing.TB, path string) []Block {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var out []Block
	var cur *Block
	var code []string
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			lang, info, _ := strings.Cut(strings.TrimPrefix(trimmed, "```"), " ")
			cur, code = &Block{Lang: lang, Info: strings.TrimSpace(info)}, nil
		case cur != nil && trimmed == "```":
			cur.Code = strings.Join(code, "\n")
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			code = append(code, line)
		}
	}
	if cur != nil {
		t.Fatalf("%s: an unterminated code block", path)
	}
	return out
}
