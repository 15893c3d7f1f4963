pytest_plugins = ["headend.testing"]
