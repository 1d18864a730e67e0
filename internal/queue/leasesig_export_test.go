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

// TrustLeaseForTest is how the value v of key stands with k: what a
// standby computes at each renewal it sees.
func TrustLeaseForTest(key string, v []byte, k MarkKey) bool {
	_, t := trustLease(key, v, k, 0, false)
	return t == leaseSigned
}

// LeaseValueForTest is the value instance writes as key's holder.
func LeaseValueForTest(key, instance string, k MarkKey) []byte {
	return leaseValue(key, instance, 0, k)
}
