"""Helpers of the tests and benchmarks: features and reference resizes (features), the peers'
weights and torchvision's ops (peers), a real service process (service), tiny representation
spaces (spaces), a headless browser (browser), and the scripts torchrun starts (distributed_*)."""
