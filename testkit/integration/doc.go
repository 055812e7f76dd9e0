// Package integration holds the tests of pkg's packages that need a real
// server, one folder per package (stream/), and the check that keeps
// them here: pkg is the contract and what the binaries share, so neither
// its packages nor its tests may need a server or container library.
package integration
