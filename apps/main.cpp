// The `qil` command: dispatches to subcommands.
#include <iostream>

int main(int argc, char** argv) {
  std::cout << "qil\n";
  return 0;
}
