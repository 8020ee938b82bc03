// Package deps holds the rules of mcpgw's import graph as a test
// (deps_test.go): what each layer may import, so that a change that
// breaks the layout fails make test rather than a review.
package deps
