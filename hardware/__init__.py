"""What the machine is: host facts and the accelerator catalog."""
