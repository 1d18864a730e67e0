package runbook

import "slices"

// Judge returns the problems of rb for one run: its own problems, then
// every required variable env does not set (an empty value counts as set,
// as in stage0) and every input file exists does not find. env is the
// request's environment only: a run never sees the service's own
// environment, so neither does its validation.
func (rb *Runbook) Judge(env map[string]string, exists func(input string) error) []Problem {
	problems := slices.Clone(rb.Problems)
	for _, v := range rb.Env {
		if _, ok := env[v.Name]; !ok {
			problems = append(problems, Problem{Code: CodeEnvNotSet, Message: "Required environment variable not set: " + v.Name})
		}
	}
	if exists != nil {
		for _, in := range rb.Inputs {
			if err := exists(in); err != nil {
				problems = append(problems, inputProblem(in, err))
			}
		}
	}
	return problems
}

// Check returns every problem a run of rb with env would be refused for,
// as execute judges it: Judge's, with each input checked as a run copies
// it and the cap max on the script and its files (CheckInputs).
func (s *Source) Check(rb *Runbook, env map[string]string, max int64) []Problem {
	return append(rb.Judge(env, nil), s.CheckInputs(rb, max)...)
}
