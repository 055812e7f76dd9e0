//go:build !unix

package pgcluster

import "errors"

var errUnsupported = errors.New("pgcluster: a private cluster needs a Unix system; use a PostgreSQL server or Docker")

type user struct{}

func serverUser() (*user, error)                      { return nil, errUnsupported }
func (u *user) run(string, ...string) ([]byte, error) { return nil, errUnsupported }
func (u *user) own(string) error                      { return errUnsupported }
func (u *user) reach(string) error                    { return errUnsupported }
func lock(string) (func(), error)                     { return nil, errUnsupported }
func processAlive(int) bool                           { return false }
