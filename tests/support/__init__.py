"""Support code for the tests: real servers, raw clients, the gateway harness."""
