"""The RQ jobs that carry a campaign from due to sent: kickoff, calculate, freeze, send, sweep."""
