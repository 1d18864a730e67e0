//go:build !race

package worker

const RaceEnabled = false
