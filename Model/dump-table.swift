// Prints dsm-ivy's protocol tables exactly as the plugin's describe hook does (IvyTable.describe(),
// from the same compiled IvyCore objects that libdsm-ivy.so links). Model/generate.py turns the
// text into the Promela transitions, so the model checks the table the plugin runs.
// Built and run by Model/check.sh.
import IvyCore

print(IvyTable.describe(), terminator: "")
