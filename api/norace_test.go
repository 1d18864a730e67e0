//go:build !race

package api

const RaceEnabled = false
