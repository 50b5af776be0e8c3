#!/usr/bin/perl
# invoice.pl - write an invoice for a paid order.
#
#   exec = /usr/share/dispatchd/handlers/invoice.pl [DIR]
#
# Expects data like {"order_id": 1001, "amount": 42.5}.  Prints the
# invoice; with DIR, also writes it to DIR/invoice-<order_id>.txt.
# Jobs run at least once, so a job may run twice after a crash: the file
# is named after the order and replaced atomically, so a second run does
# no harm.
#
# Exit status: 0 done; 75 try again later (cannot write the file);
# 65 the data is unusable, retrying will not help.
use strict;
use warnings;
use JSON::PP;
use File::Path qw(make_path);

use constant { EX_DATAERR => 65, EX_TEMPFAIL => 75 };

my $json = do { local $/; <STDIN> };
my $job = eval { JSON::PP->new->utf8->decode($json) };
if (ref $job ne 'HASH') {
	print STDERR "invoice: job is not a JSON object\n";
	exit EX_DATAERR;
}

my $data = $job->{data};
my ($order, $amount) = ref $data eq 'HASH' ? @$data{qw(order_id amount)} : ();
if (!defined $order || $order !~ /^[A-Za-z0-9._-]+$/ ||
    !defined $amount || $amount !~ /^-?\d+(?:\.\d+)?$/) {
	print STDERR "invoice: need data.order_id and a numeric data.amount\n";
	exit EX_DATAERR;
}

my $text = sprintf("INVOICE for order %s\namount: %.2f\njob: %s (attempt %d)\n",
    $order, $amount, $job->{id} // '?', $job->{attempt} // 0);
print $text;

exit 0 unless @ARGV;
my $dir = $ARGV[0];
my $file = "$dir/invoice-$order.txt";
my $tmp = "$file.tmp.$$";
eval {
	make_path($dir) unless -d $dir;
	open(my $fh, '>', $tmp) or die "open $tmp: $!\n";
	print $fh $text or die "write $tmp: $!\n";
	close($fh) or die "close $tmp: $!\n";
	rename($tmp, $file) or die "rename $file: $!\n";
	1;
} or do {
	print STDERR "invoice: $@";
	unlink $tmp;
	exit EX_TEMPFAIL;
};
print "written to $file\n";
exit 0;
