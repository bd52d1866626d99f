"""Built-in dataset builders (`sensorium data build NAME`)."""
