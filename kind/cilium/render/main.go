// render writes a Helm chart's manifests as `helm template` would, for kind/build.sh: Cilium's chart
// (install/kubernetes/cilium in the Cilium module, from the Go module cache) with kind/cilium/values.yaml,
// and any further values files over it, the later winning as with `helm template -f A -f B`
// (kind/cilium/hubble-values.yaml for `cluster up --hubble`).
// It links only Helm's chart loader and template engine, not the helm CLI (minutes less to build).
//
//	render CHART_DIR VALUES_FILE[,VALUES_FILE...] NAMESPACE KUBE_VERSION > manifests.yaml
package main

import (
	"fmt"
	"os"
	"path"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: render CHART_DIR VALUES_FILE[,VALUES_FILE...] NAMESPACE KUBE_VERSION")
		os.Exit(2)
	}
	if err := render(os.Args[1], os.Args[2], os.Args[3], os.Args[4]); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func render(chartDir, valuesFiles, namespace, kubeVersion string) error {
	chart, err := loader.Load(chartDir)
	if err != nil {
		return err
	}
	values, err := readValues(strings.Split(valuesFiles, ","))
	if err != nil {
		return err
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return err
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	release := chartutil.ReleaseOptions{Name: chart.Name(), Namespace: namespace, Revision: 1, IsInstall: true}
	renderValues, err := chartutil.ToRenderValues(chart, values, release, caps)
	if err != nil {
		return err
	}
	files, err := engine.Render(chart, renderValues)
	if err != nil {
		return err
	}
	for name, body := range files { // what `helm template` leaves out: notes, partials, empty templates
		if strings.HasSuffix(name, "NOTES.txt") || strings.HasPrefix(path.Base(name), "_") || strings.TrimSpace(body) == "" {
			delete(files, name)
		}
	}
	// in Helm's install order (namespaces, then accounts and roles, ... workloads), as `helm template` prints
	hooks, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return err
	}
	if len(hooks) > 0 {
		return fmt.Errorf("the chart renders %d hooks; nothing here runs them", len(hooks))
	}
	for _, m := range manifests {
		fmt.Printf("---\n# Source: %s\n%s\n", m.Name, strings.TrimSpace(m.Content))
	}
	return nil
}

// readValues returns the files' values merged, a later file's keys over an earlier one's (nested maps
// merged key by key, as helm's -f does).
func readValues(files []string) (chartutil.Values, error) {
	merged := chartutil.Values{}
	for _, file := range files {
		values, err := chartutil.ReadValuesFile(file)
		if err != nil {
			return nil, err
		}
		merged = chartutil.CoalesceTables(values.AsMap(), merged)
	}
	return merged, nil
}
