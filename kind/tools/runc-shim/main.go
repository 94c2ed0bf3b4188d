// Command runc-shim runs runc on a machine whose capability bounding set lacks
// CAP_SYS_RESOURCE. A privileged container asks for every capability, and runc
// fails to grant one the runtime does not hold ("unable to apply caps").
// Before `runc create` or `runc run` the shim removes CAP_SYS_RESOURCE from the
// bundle's config.json and clamps a negative oom_score_adj to 0; every call
// then execs the real runc with the same arguments.
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
	"syscall"
)

const realRunc = "/usr/sbin/runc"

func main() {
	if bundle := bundleDir(os.Args[1:]); bundle != "" {
		if err := dropSysResource(filepath.Join(bundle, "config.json")); err != nil {
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

// bundleDir returns the --bundle (or -b) of a create or run call, else "".
func bundleDir(args []string) string {
	creating := false
	for i, arg := range args {
		switch {
		case arg == "create" || arg == "run":
			creating = true
		case (arg == "--bundle" || arg == "-b") && i+1 < len(args):
			if creating {
				return args[i+1]
			}
		case len(arg) > 9 && arg[:9] == "--bundle=" && creating:
			return arg[9:]
		}
	}
	return ""
}

// dropSysResource rewrites the OCI spec without CAP_SYS_RESOURCE and without a
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
	if process, ok := spec["process"].(map[string]any); ok {
		if caps, ok := process["capabilities"].(map[string]any); ok {
			for set, list := range caps {
				caps[set] = without(list, "CAP_SYS_RESOURCE")
			}
		}
		if adj, ok := process["oomScoreAdj"].(float64); ok && adj < 0 {
			process["oomScoreAdj"] = 0
		}
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
