//! Spec front ends. Filled in by the spec issue.
