// Package controllers: the one name Cilium v1.20.2 uses from sigs.k8s.io/mcs-api/controllers,
// with upstream's value (see go.mod).
package controllers

// DerivedServiceAnnotation is set on a multi-cluster Service's derived Service.
const DerivedServiceAnnotation = "multicluster.kubernetes.io/derived-service"
