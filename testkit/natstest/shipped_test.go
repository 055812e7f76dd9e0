package natstest

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/composetest"
)

// The NATS servers the project ships acknowledge a write only once it is
// on disk (issue 19): each test starts a server the way the nats-server
// binary configures itself from its command line (server.ConfigureOptions,
// which the binary's main calls, reading the same config file), with the
// arguments `make run` or docker-compose.yml give it (only ports and the
// store directory changed to this machine's), and reads its settings back
// from the monitoring endpoint, /varz.

// repoRoot is the repository, from this package's directory.
const repoRoot = "../.."

// configureMu serializes server.ConfigureOptions.
var configureMu sync.Mutex

// fromArgs returns a server configured from nats-server command-line
// arguments, not started. Signal handling and logging stay off, as for
// every test server.
func fromArgs(t *testing.T, args []string) *Server {
	t.Helper()
	fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	noop := func() {}
	// ConfigureOptions writes package-level state of nats-server (the
	// race detector caught two parallel tests doing so): one at a time.
	configureMu.Lock()
	opts, err := server.ConfigureOptions(fs, args, noop, noop, noop)
	configureMu.Unlock()
	require.NoError(t, err, "nats-server %s", strings.Join(args, " "))
	opts.NoSigs, opts.NoLog = true, true
	s := &Server{t: t, opts: *opts, storeDir: opts.StoreDir}
	t.Cleanup(s.Stop)
	return s
}

// syncSettings is what /varz says of JetStream's writes to disk.
type syncSettings struct {
	Version   string `json:"version"`
	JetStream struct {
		Config *struct {
			SyncInterval time.Duration `json:"sync_interval"`
			SyncAlways   bool          `json:"sync_always"`
		} `json:"config"`
		Meta *struct {
			Leader string `json:"leader"`
			Size   int    `json:"cluster_size"`
		} `json:"meta"`
	} `json:"jetstream"`
}

func varz(t *testing.T, s *Server) syncSettings {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", s.opts.HTTPPort))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var v syncSettings
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
	require.NotNil(t, v.JetStream.Config, "JetStream is enabled")
	return v
}

func requireSyncsEveryWrite(t *testing.T, what string, v syncSettings) {
	t.Helper()
	require.True(t, v.JetStream.Config.SyncAlways,
		"%s: nats-server %s syncs to disk every %s, not before it acknowledges (sync_always false)", what, v.Version, v.JetStream.Config.SyncInterval)
}

// `make run` starts its own nats-server (scripts/run.sh) with
// deploy/nats/nats.conf: every write synced before it is acknowledged.
func TestMakeRunServerSyncsEveryWrite(t *testing.T) {
	t.Parallel()
	script, err := os.ReadFile(filepath.Join(repoRoot, "scripts", "run.sh"))
	require.NoError(t, err)
	// The variables the line uses, with their defaults; the port is a
	// free one (PORTALSYNC_NATS_PORT may be in use).
	vars := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s*([a-z_]+)=\$\{[A-Z_]+:-([^}]+)\}$`).FindAllStringSubmatch(string(script), -1) {
		vars[m[1]] = m[2]
	}
	require.Contains(t, vars, "port")
	vars["port"] = strconv.Itoa(freePort(t))
	line := regexp.MustCompile(`(?m)^\s*bin/nats-server (.+) >\.data/nats\.log 2>&1 &$`).FindStringSubmatch(string(script))
	require.NotNil(t, line, "scripts/run.sh starts bin/nats-server in the background")
	var args []string
	for i, f := range strings.Fields(line[1]) {
		f = strings.Trim(f, `"`)
		if strings.HasPrefix(f, "$") {
			v, ok := vars[strings.Trim(f, "${}")]
			require.True(t, ok, "run.sh argument %s: unknown variable", f)
			f = v
		}
		switch {
		case i > 0 && (args[i-1] == "-c" || args[i-1] == "--config"):
			f = filepath.Join(repoRoot, f) // run.sh runs from the repository
		case f == ".data/nats":
			f = t.TempDir()
		}
		args = append(args, f)
	}
	t.Logf("make run: bin/nats-server %s", strings.Join(args, " "))
	s := fromArgs(t, append(args, "-m", strconv.Itoa(freePort(t))))
	s.Start()
	requireSyncsEveryWrite(t, "make run", varz(t, s))
}

// docker-compose.yml's three NATS nodes each run with deploy/nats/nats.conf
// mounted and named by --config: every write synced before it is
// acknowledged. The nodes are started as compose starts them (the same
// flags; loopback ports and temporary stores) and form their cluster.
func TestComposeServersSyncEveryWrite(t *testing.T) {
	t.Parallel()
	f, err := composetest.Load(filepath.Join(repoRoot, "docker-compose.yml"))
	require.NoError(t, err)
	names := []string{"nats-1", "nats-2", "nats-3"}
	routePort := map[string]int{}
	for _, n := range names {
		routePort[n] = freePort(t)
	}
	var servers []*Server
	for _, name := range names {
		svc, ok := f.Services[name]
		require.True(t, ok, name)
		// The image is the version these tests run.
		require.Equal(t, server.VERSION, strings.TrimSuffix(strings.SplitN(svc.Image, ":", 2)[1], "-alpine"), svc.Image)
		mounts := map[string]string{} // container path -> repository path
		for _, v := range svc.Volumes {
			parts := strings.Split(v, ":")
			if strings.HasPrefix(parts[0], "./") {
				mounts[parts[1]] = filepath.Join(repoRoot, parts[0])
			}
		}
		args := append([]string(nil), svc.Command...)
		for i := 1; i < len(args); i++ {
			switch args[i-1] {
			case "--config", "-c":
				host, ok := mounts[args[i]]
				require.True(t, ok, "%s: config file %s is mounted from the repository", name, args[i])
				args[i] = host
			case "--store_dir", "-sd":
				args[i] = t.TempDir()
			case "--http_port", "-m":
				args[i] = strconv.Itoa(freePort(t))
			case "--cluster":
				args[i] = fmt.Sprintf("nats://127.0.0.1:%d", routePort[name])
			case "--routes":
				routes := strings.Split(args[i], ",")
				for j, r := range routes {
					host := strings.TrimSuffix(strings.TrimPrefix(r, "nats://"), ":6222")
					require.Contains(t, routePort, host, "%s routes to %s", name, r)
					routes[j] = fmt.Sprintf("nats://127.0.0.1:%d", routePort[host])
				}
				args[i] = strings.Join(routes, ",")
			}
		}
		t.Logf("compose %s: nats-server %s", name, strings.Join(args, " "))
		servers = append(servers, fromArgs(t, append(args, "-a", "127.0.0.1", "-p", strconv.Itoa(freePort(t)))))
	}
	for _, s := range servers {
		s.startAsync()
	}
	for _, s := range servers {
		s.waitReady()
	}
	for i, s := range servers {
		requireSyncsEveryWrite(t, "compose "+names[i], varz(t, s))
	}
	require.Eventually(t, func() bool {
		for _, s := range servers {
			if v := varz(t, s); v.JetStream.Meta == nil || v.JetStream.Meta.Leader == "" || v.JetStream.Meta.Size != 3 {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "the three nodes form their JetStream cluster, as in compose")
}

// SyncAlways gives a test server the shipped setting.
func TestSyncAlwaysOption(t *testing.T) {
	t.Parallel()
	s := Run(t, SyncAlways(), func(o *server.Options) { o.HTTPPort = freePort(t) })
	requireSyncsEveryWrite(t, "natstest.SyncAlways", varz(t, s))
	plain := Run(t, func(o *server.Options) { o.HTTPPort = freePort(t) })
	require.False(t, varz(t, plain).JetStream.Config.SyncAlways, "the default is a sync every two minutes")
}
