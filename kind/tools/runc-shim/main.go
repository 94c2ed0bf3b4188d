// Command runc-shim runs runc on a machine whose capability bounding set lacks
// CAP_SYS_RESOURCE. A privileged container asks for every capability, and runc
// fails to grant one the runtime does not hold ("unable to apply caps").
// Before `runc create` or `runc run` the shim removes CAP_SYS_RESOURCE from the
// bundle's config.json and clamps a negative oom_score_adj to 0, and before
// `runc exec` it removes it from the --process file (`docker exec --privileged`);
// every call then execs the real runc with the same arguments.
//
// Register it only where the capability is missing (dnscorrelate's cluster
// build checks /proc/self/status): as Docker's default runtime for kind's
// node containers, and as containerd's runc binary inside the nodes.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

const realRunc = "/usr/sbin/runc"

func main() {
	if spec := specFile(os.Args[1:]); spec != "" {
		if err := dropSysResource(spec); err != nil {
			fmt.Fprintf(os.Stderr, "runc-shim: %v\n", err)
			os.Exit(1)
		}
	}
	runc := os.Getenv("RUNC_SHIM_RUNC")
	if runc == "" {
		runc = realRunc
	}
	err := syscall.Exec(runc, append([]string{runc}, os.Args[1:]...), os.Environ())
	fmt.Fprintf(os.Stderr, "runc-shim: exec %s: %v\n", runc, err)
	os.Exit(1)
}

// specFile returns the JSON that sets the new process's capabilities: the
// bundle's config.json for create and run, the --process file for exec; else "".
func specFile(args []string) string {
	command := ""
	for i, arg := range args {
		value := ""
		if i+1 < len(args) {
			value = args[i+1]
		}
		switch {
		case command == "" && (arg == "create" || arg == "run" || arg == "exec"):
			command = arg
		case command != "exec" && command != "" && (arg == "--bundle" || arg == "-b"):
			return filepath.Join(value, "config.json")
		case command != "exec" && command != "" && strings.HasPrefix(arg, "--bundle="):
			return filepath.Join(strings.TrimPrefix(arg, "--bundle="), "config.json")
		case command == "exec" && (arg == "--process" || arg == "-p"):
			return value
		case command == "exec" && strings.HasPrefix(arg, "--process="):
			return strings.TrimPrefix(arg, "--process=")
		}
	}
	return ""
}

// dropSysResource rewrites an OCI spec (or process) without CAP_SYS_RESOURCE and without a
// negative oom_score_adj, leaving every other field as it was.
func dropSysResource(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	process, ok := spec["process"].(map[string]any)
	if !ok {
		process = spec // an exec --process file is the process object itself
	}
	if caps, ok := process["capabilities"].(map[string]any); ok {
		for set, list := range caps {
			caps[set] = without(list, "CAP_SYS_RESOURCE")
		}
	}
	if adj, ok := process["oomScoreAdj"].(float64); ok && adj < 0 {
		process["oomScoreAdj"] = 0
	}
	out, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

func without(list any, name string) any {
	items, ok := list.([]any)
	if !ok {
		return list
	}
	kept := make([]any, 0, len(items))
	for _, item := range items {
		if item != name {
			kept = append(kept, item)
		}
	}
	return kept
}
