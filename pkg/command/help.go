package command

import (
	"bytes"
	"io"
	"strings"

	"github.com/alecthomas/kong"
)

// printHelp is kong's help with one change: kong lists the required flags
// of a mutually exclusive group (`xor:"…"`) side by side in the usage line,
// as if each were required ("--event=STRING --all"); this shows the group as
// a choice, "(--event=STRING | --all)".
func printHelp(options kong.HelpOptions, ctx *kong.Context) error {
	var buf bytes.Buffer
	out := ctx.Stdout
	ctx.Stdout = &buf
	err := kong.DefaultHelpPrinter(options, ctx)
	ctx.Stdout = out
	if err != nil {
		return err
	}
	text := buf.String()
	if node := ctx.Selected(); node != nil {
		usage, rest, _ := strings.Cut(text, "\n")
		text = xorUsage(usage, node) + "\n" + rest
	}
	_, err = io.WriteString(out, commandList(text, ctx.Model.Node))
	return err
}

// commandList rewrites the list of commands in help text (a command's
// summary on a line of its own, as kong prints it under "Commands:") the
// way xorUsage rewrites the usage line, so that `syncer --help` shows
// "dlq redrive (--event=ID | --all)" as `syncer dlq redrive --help` does.
func commandList(text string, root *kong.Node) string {
	summaries := map[string]string{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, c := range n.Children {
			if s := c.Summary(); xorUsage(s, c) != s {
				summaries[s] = xorUsage(s, c)
			}
			walk(c)
		}
	}
	walk(root)
	if len(summaries) == 0 {
		return text
	}
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		trimmed := strings.TrimLeft(line, " ")
		if fixed, ok := summaries[trimmed]; ok {
			lines[i] = line[:len(line)-len(trimmed)] + fixed
		}
	}
	return strings.Join(lines, "\n")
}

// xorUsage rewrites a usage line so that each group of required, mutually
// exclusive flags of node reads as one choice.
func xorUsage(usage string, node *kong.Node) string {
	groups := map[string][]string{}
	var order []string
	for _, flags := range node.AllFlags(true) {
		for _, f := range flags {
			if !f.Required {
				continue
			}
			for _, g := range f.Xor {
				if _, ok := groups[g]; !ok {
					order = append(order, g)
				}
				groups[g] = append(groups[g], f.Summary())
			}
		}
	}
	for _, g := range order {
		summaries := groups[g]
		if len(summaries) < 2 {
			continue
		}
		first := -1
		for _, s := range summaries {
			if i := strings.Index(usage, " "+s); i >= 0 && (first < 0 || i < first) {
				first = i
			}
		}
		if first < 0 {
			continue
		}
		// Removing the flags leaves what stood before the first one in place.
		for _, s := range summaries {
			usage = strings.Replace(usage, " "+s, "", 1)
		}
		usage = usage[:first] + " (" + strings.Join(summaries, " | ") + ")" + usage[first:]
	}
	return usage
}
