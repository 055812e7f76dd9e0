// Package composetest checks docker-compose.yml against the binaries'
// configuration, since no Docker engine runs where the tests run: the
// services exist, their environment names are ones the binaries read, and
// their healthchecks call real commands on the configured ports.
package composetest

import (
	"fmt"
	"os"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// File is the part of a compose file the checks read.
type File struct {
	Services map[string]Service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
}

// Service is one compose service.
type Service struct {
	Image       string            `yaml:"image"`
	Build       *Build            `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Healthcheck *Healthcheck      `yaml:"healthcheck"`
	Deploy      struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Ports   []string `yaml:"ports"`
	Volumes []string `yaml:"volumes"`
	// StopGracePeriod is how long Docker waits after SIGTERM before
	// SIGKILL (default 10s).
	StopGracePeriod string `yaml:"stop_grace_period"`
}

// Build is a service's build section.
type Build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

// Healthcheck is a service's healthcheck.
type Healthcheck struct {
	Test []string `yaml:"test"`
}

// Load parses a compose file (anchors and merge keys resolved).
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read compose file: %w", err)
	}
	var f File
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parse compose file: %w", err)
	}
	return &f, nil
}

// EnvNames returns every environment variable a kong grammar reads (its
// `env` tags), for the command path given (e.g. "run"); an empty path
// collects every command's.
func EnvNames(grammar any, path ...string) map[string]bool {
	out := map[string]bool{}
	collect(reflect.TypeOf(grammar), path, out)
	return out
}

func collect(t reflect.Type, path []string, out map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if env := f.Tag.Get("env"); env != "" {
			for _, name := range strings.Split(env, ",") {
				out[name] = true
			}
		}
		_, isCmd := f.Tag.Lookup("cmd")
		switch {
		case isCmd:
			name := f.Tag.Get("name")
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			if len(path) == 0 {
				collect(f.Type, nil, out)
			} else if path[0] == name {
				collect(f.Type, path[1:], out)
			}
		case f.Anonymous:
			collect(f.Type, path, out)
		}
	}
}

// Commands returns the names of a kong grammar's top-level commands.
func Commands(grammar any) map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeOf(grammar)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if _, ok := f.Tag.Lookup("cmd"); ok {
			name := f.Tag.Get("name")
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			out[name] = true
		}
	}
	return out
}
