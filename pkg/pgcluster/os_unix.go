//go:build unix

package pgcluster

import (
	"fmt"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// user runs the server's tools: this process's user, or, for root (whom
// initdb and postgres refuse), the OS user postgres.
type user struct {
	cred *syscall.Credential // nil: this process's user
}

func serverUser() (*user, error) {
	if os.Geteuid() != 0 {
		return &user{}, nil
	}
	u, err := osuser.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: as root the cluster runs as the OS user postgres: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: uid of postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: gid of postgres: %w", err)
	}
	return &user{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}, nil
}

func (u *user) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	if u.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred}
	}
	return cmd.CombinedOutput()
}

// own gives path to the server's user.
func (u *user) own(path string) error {
	if u.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(u.cred.Uid), int(u.cred.Gid)); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// reach checks that the server's user can pass through every folder above
// dir (a root-owned 0700 folder, as os.MkdirTemp makes, stops it).
func (u *user) reach(dir string) error {
	if u.cred == nil {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	for d := abs; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok && st.Uid != u.cred.Uid && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("pgcluster: the OS user postgres, who runs the cluster for root, cannot enter %s (mode %v): chmod o+x it or use another folder", d, fi.Mode().Perm())
		}
		if filepath.Dir(d) == d {
			return nil
		}
	}
}

// lock takes an exclusive flock on path, waiting for it; the kernel
// releases it when the process dies.
func lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("pgcluster: lock %s: %w", path, err)
	}
	return func() { _ = f.Close() }, nil
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}
