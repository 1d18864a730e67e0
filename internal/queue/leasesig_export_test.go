package queue

// SignLeaseForTest is the signature k makes of instance as the holder of
// key: what a worker of another host, or of this one on another seed,
// signs.
func SignLeaseForTest(k MarkKey, key, instance string) string {
	return k.signLease(key, "held", instance)
}

// SignReleaseForTest is the signature k makes of instance's release of
// key: a release copied from an earlier holder carries it.
func SignReleaseForTest(k MarkKey, key, instance string) string {
	return k.signLease(key, "released", instance)
}
