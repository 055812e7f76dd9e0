// Package flagtest parses a binary's command line as the binary does but
// without the environment, so that a test sees the flags' own defaults
// whatever variables the machine running it has set.
package flagtest

import (
	"testing"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/require"
)

// Parse parses args into grammar (a kong CLI struct) ignoring every
// flag's environment variable; opts are the binary's (kong.Vars, say).
func Parse(t testing.TB, grammar any, args []string, opts ...kong.Option) {
	t.Helper()
	parser, err := kong.New(grammar, append([]kong.Option{kong.Exit(func(code int) { t.Fatalf("kong exits %d", code) })}, opts...)...)
	require.NoError(t, err)
	ignoreEnv(parser.Model.Node)
	_, err = parser.Parse(args)
	require.NoError(t, err)
}

func ignoreEnv(n *kong.Node) {
	for _, f := range n.Flags {
		f.Tag.Envs = nil
	}
	for _, a := range n.Positional {
		a.Tag.Envs = nil
	}
	for _, c := range n.Children {
		ignoreEnv(c)
	}
}
