package main

import "github.com/spf13/cobra"

// clientCommands are the commands that talk to a running API.
func (a *app) clientCommands() []*cobra.Command { return nil }
