"""Test support shared by the test suites: recorded-fixture loading and an in-process mock upstream."""
