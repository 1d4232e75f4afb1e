"""The open-loop load generator: fires requests at their scheduled times and records them."""
