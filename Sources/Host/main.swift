print("giantvm")
