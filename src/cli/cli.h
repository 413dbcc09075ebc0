/* cli.h - the zimage command's subcommands.  main.c dispatches on argv[1];
 * each cmd_*.c implements one subcommand as int cmd_NAME(argc, argv) with
 * argv[0] = the subcommand name.  Return value = process exit status
 * (0 ok, 1 runtime error, 2 usage error). */
#ifndef ZIMAGE_CLI_H
#define ZIMAGE_CLI_H

int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
