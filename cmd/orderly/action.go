package main

import (
	"cmp"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/config"
)

// actionCommand is `orderly action`: tools for the actions of a config.
func (a *app) actionCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "action", Short: "List and run actions; print their polkit rule (docs/actions.md)"}
	var configPath, user, host string
	rule := &cobra.Command{
		Use:   "polkit-rule [NAME...]",
		Short: "Print the polkit rule that lets the worker's user run only these actions' systemd verbs on their units",
		Long: "Print a polkit rules.d file for the named actions (every action with a systemd verb when none is named):\n" +
			"the worker's user may run each action's verb on the units its pattern can render, and no other\n" +
			"systemd management action. Install it as /etc/polkit-1/rules.d/50-orderly.rules (deploy/polkit/).",
		RunE: func(cmd *cobra.Command, names []string) error {
			cfg, _, err := config.Load(configPath, a.environ, nil)
			if err == nil {
				// The config may be orderly serve's (orderly-serve.service's
				// /etc/orderly/orderly.yaml), whose compat surfaces may leave
				// their host to serve: fill it in as serve does, or such a
				// file, which serve runs, was refused here for keys the rule
				// never reads.
				cfg.DefaultCompatHosts(cmp.Or(cfg.Host, defaultHost()))
				err = cfg.Validate()
			}
			if err != nil {
				return err
			}
			if len(cfg.Actions.Definitions) == 0 {
				if configPath == "" {
					return fmt.Errorf("no actions: pass the config that defines them with --config")
				}
				return fmt.Errorf("%s defines no actions", configPath)
			}
			set, err := action.New(cfg.Actions)
			if err != nil {
				return fmt.Errorf("actions: %w", err)
			}
			grants, err := set.Polkit(names, host)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(a.stdout, action.PolkitRule(user, grants))
			return err
		},
	}
	rule.Flags().StringVar(&configPath, "config", "", "config file (YAML or TOML)")
	rule.Flags().StringVar(&user, "user", "orderly-worker", "the Unix user the worker runs as (deploy/systemd/orderly-worker.service)")
	rule.Flags().StringVar(&host, "host", "", "the host id of the worker the rule is for: only actions it may run (default: every action, whatever its hosts)")
	cmd.AddCommand(rule, a.actionListCommand(), a.actionRunCommand())
	return cmd
}
